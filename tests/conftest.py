"""Shared fixtures: a clean snnTorch neuron registry per test, ``tests.models:NAME`` importable in this
process and in subprocesses, and helpers that write small input files under ``tmp_path``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import snntorch as snn
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = REPO_ROOT / "tests"

# `tests.models` must import while pytest collects the test modules (before any fixture runs), whatever
# the working directory and however pytest was started.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(autouse=True)
def _reset_snntorch_instances():
    """snnTorch appends every neuron it builds to the global ``SpikingNeuron.instances`` list (its
    ``utils.reset`` walks that list); empty it so no test sees another test's neurons."""
    snn.SpikingNeuron.instances.clear()
    yield
    snn.SpikingNeuron.instances.clear()


@pytest.fixture(autouse=True)
def tests_importable(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Make ``tests.models:NAME`` references resolve here and in subprocesses.

    Returns:
        An environment for ``subprocess`` calls with the repository root on ``PYTHONPATH``.
    """
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), *([old] if old else [])]))
    return dict(os.environ)


@pytest.fixture
def run_cli(tests_importable: dict[str, str], tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the installed ``snncompress`` command (or ``python -m snncompress.cli.app``) in ``tmp_path``."""
    exe = shutil.which("snncompress")
    prefix = [exe] if exe else [sys.executable, "-m", "snncompress.cli.app"]

    def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], cwd=tmp_path, env=tests_importable, capture_output=True,
                              text=True, timeout=timeout)

    return run


@pytest.fixture
def write_tensors(tmp_path: Path) -> Callable[..., Path]:
    """Write ``{name: tensor}`` to ``tmp_path/<filename>`` as .safetensors, .npz or .pt (by suffix)."""

    def write(filename: str, **tensors: torch.Tensor) -> Path:
        path = tmp_path / filename
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        elif suffix == ".npz":
            import numpy as np

            np.savez(path, **{k: v.numpy() for k, v in tensors.items()})
        elif suffix in (".pt", ".pth"):
            torch.save(dict(tensors), path)
        else:
            raise ValueError(f"write_tensors: no writer for {suffix}")
        return path

    return write


@pytest.fixture
def saved_weights(tmp_path: Path) -> Callable[..., Path]:
    """Save a state dict (optionally edited) to ``tmp_path/<filename>`` (.safetensors or .pt)."""

    def save(state_dict: dict[str, torch.Tensor], filename: str = "weights.safetensors") -> Path:
        path = tmp_path / filename
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(path))
        else:
            torch.save(state_dict, path)
        return path

    return save

