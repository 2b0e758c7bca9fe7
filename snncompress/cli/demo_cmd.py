"""``snncompress demo``: the main job on the built-in default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from snncompress.cli import common as c


def register(app: typer.Typer) -> None:
    app.command(
        "demo",
        epilog="Example:  snncompress demo -o demo.safetensors --force",
    )(demo)


def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the compressed model.")] = Path(
        "snncompress-demo.safetensors"),
    force: c.ForceOpt = False,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train the demo model now instead of using the "
                                                             "shipped weights (about a minute on 2 cores).")] = False,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", help="QAT epochs of the default recipe (default 5).")] = None,
    seed: c.SeedOpt = 0,
    json_file: c.JsonFileOpt = None,
    device: c.DeviceOpt = "auto",
) -> None:
    """Compress the built-in digits convolutional SNN with the default recipe, print the hardware report
    and write the compressed file."""
    from snncompress.demo.run import run_demo

    c.check_json_target(json_file, force)  # before any work, like the model output
    console = c.err_console if c.json_to_stdout(json_file) else c.console  # stdout stays JSON only
    result = run_demo(output, force=force, retrain=retrain, epochs=epochs, seed=seed, console=console,
                      err_console=c.err_console, device=device)
    c.emit_json(json_file, result)
