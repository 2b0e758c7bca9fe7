"""Where the model runs: ``--device auto|cpu|cuda|cuda:N|mps``.

The model is moved to the device; data stays on the CPU and each batch is moved by the runner
(:func:`snncompress.sim.runner.model_device`). Files are always written from CPU copies (the file
writer copies every tensor to the CPU), so their layout and bytes do not depend on the device.
"""

from __future__ import annotations

import re

import torch

from snncompress.errors import InputError

DEVICES = "auto, cpu, cuda, cuda:N or mps"
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(spec: str | torch.device | None) -> torch.device:
    """The torch device for ``spec``; ``auto`` (or None): CUDA when available, else the CPU.

    ``auto`` never picks MPS: its float64 support (which calibration uses) is incomplete, so it has to
    be asked for.

    Raises:
        InputError: an unknown spec, or a device this machine does not have (one line, exit 2).
    """
    if isinstance(spec, torch.device):
        return spec
    text = (spec or "auto").strip().lower()
    if not _PATTERN.match(text):
        raise InputError(f"unknown device '{spec}'; use {DEVICES}")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {text}: no CUDA GPU is available here (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu")
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) here "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        return device
    if text == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    return torch.device(text)
