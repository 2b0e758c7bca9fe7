"""Write the files of ``tests/fileformat/legacy/`` (run once, on main at 6c79223, 2026-12-08).

Each ``*.safetensors`` here was written by that version's CLI (the commands below) and is kept as it was, so the
suite can check that every later version loads it and runs it to the same spikes (``expected.safetensors``:
per file, the inputs and the output spike record that version produced). Do not regenerate the files; add new
ones beside them when the format grows.

    cd tests/fileformat/legacy && PYTHONPATH=../../.. python make_legacy.py
"""

from __future__ import annotations

import subprocess
import sys

import torch
from safetensors.torch import save_file

COMMANDS = {
    "q_mlp": "quantize tests.models:leaky_mlp --data tests.models:static_dataset --weight-quant pot4 "
             "--membrane-quant int4 --calibration-iters 20",
    "q_rleaky": "quantize tests.models:rleaky_mlp --data tests.models:static_dataset --weight-quant int8 "
                "--membrane-quant int8 --membrane-grid auto --calibration none",
    "p_conv": "prune tests.models:conv2d_net --data tests.models:static_images --train-data tests.models:static_images "
              "--weights-unstructured 0.5 --spatial 0.3 --epochs 1",
    "g_conv": "prune tests.models:conv2d_net --data tests.models:static_images --train-data tests.models:static_images "
              "--channel-threshold 0.47 --epochs 1",
    "qat_tut": "quantize tests.models:tutorial_net --data tests.models:static_dataset --train-data "
               "tests.models:static_dataset --mode qat --epochs 1 --weight-quant ternary --membrane-quant ternary",
    "int_mlp": "quantize tests.models:leaky_mlp --data dyadic8.safetensors --weight-quant pot4 --membrane-quant int4 "
               "--integer-only --calibration none",
    "thr": "threshold tests.models:leaky_mlp --data tests.models:static_dataset --train-data "
           "tests.models:static_dataset --epochs 1",
}
INPUTS = {"p_conv": (1, 8, 8), "g_conv": (1, 8, 8)}
TIME_STEPS = 3


def inputs(name: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    x = torch.rand((6, *INPUTS.get(name, (8,))), generator=gen)
    return (x * 16).round() / 16


def main() -> None:
    gen = torch.Generator().manual_seed(3)
    save_file({"x": (torch.rand(12, 8, generator=gen) * 16).round() / 16, "y": torch.arange(12) % 4},
              "dyadic8.safetensors")
    for name, command in COMMANDS.items():
        subprocess.run([sys.executable, "-m", "snncompress", *command.split(), "-o", f"{name}.safetensors",
                        "--force"], check=True)
    from snncompress import load_model
    from snncompress.sim.runner import SNNRunner

    expected = {}
    for name in COMMANDS:
        model = load_model(f"{name}.safetensors", trust_code=True)
        x = inputs(name)
        out = SNNRunner(model).run(x, is_sequence=False, time_steps=TIME_STEPS)
        expected[f"{name}::x"] = x
        expected[f"{name}::spikes"] = out.spikes.contiguous()
    save_file(expected, "expected.safetensors")


if __name__ == "__main__":
    main()
