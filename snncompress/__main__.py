"""``python -m snncompress``: the CLI, for launchers that start a module (``torchrun -m snncompress run ...``)."""

from snncompress.cli.app import main

if __name__ == "__main__":
    main()
