"""``--device``: the model runs where it is asked to; files written are the same whatever the device.

The CUDA tests run only where a GPU is present (``skipif``); CI and the development machine have none.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from snncompress.errors import InputError
from snncompress.sim.device import resolve_device
from snncompress.sim.runner import SNNRunner, model_device
from tests.cli.support import assert_input_error, cli
from tests.models import TINY_MODELS

TINY, DATA = "tests.models:leaky_mlp", "tests.models:static_dataset"
QUANTIZE = ["quantize", TINY, "--data", DATA, "-T", "3", "--calibration-iters", "20", "-q"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")


def test_auto_is_cuda_when_there_is_one_else_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_devices_are_refused(spec):
    if spec == "":
        assert resolve_device(spec) == resolve_device("auto")  # empty reads as auto
        return
    with pytest.raises(InputError, match="unknown device"):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_an_input_error(capsys, tmp_path):
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda:0")
    out = tmp_path / "out.safetensors"
    assert_input_error(capsys, *QUANTIZE, "-o", out, "--device", "cuda", match="no CUDA GPU")
    assert not out.exists()


def test_bad_device_on_the_cli_is_one_line_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "out.safetensors"
    assert_input_error(capsys, *QUANTIZE, "-o", out, "--device", "gpu", match="unknown device 'gpu'")
    assert not out.exists()
    assert_input_error(capsys, "evaluate", TINY, "--data", DATA, "--device", "gpu", match="unknown device")


def test_device_cpu_writes_the_same_tensors_as_the_default_here(capsys, tmp_path):
    # tensors, not bytes: the pass history records calibration wall times
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert cli(capsys, *QUANTIZE, "-o", a, "--device", "cpu")[0] == 0
    assert cli(capsys, *QUANTIZE, "-o", b)[0] == 0  # auto: the CPU on a machine without a GPU
    if not torch.cuda.is_available():
        ta, tb = load_file(str(a)), load_file(str(b))
        assert sorted(ta) == sorted(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)
    code, out, err = cli(capsys, "evaluate", a, "--data", DATA, "-T", "3", "--device", "cpu", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["samples"] == 10


def test_the_runner_moves_each_batch_to_the_model():
    # the meta device stands in for a GPU: a CPU batch that were not moved would fail to mix with it
    model = TINY_MODELS["leaky_mlp"].build().to("meta")
    out = SNNRunner(model).run(torch.rand(2, 8), is_sequence=False, time_steps=2)
    assert model_device(model) == torch.device("meta") and out.spikes.device == torch.device("meta")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


@needs_cuda
def test_cuda_run_writes_a_file_laid_out_like_the_cpu_one(capsys, tmp_path):
    cpu, gpu = tmp_path / "cpu.safetensors", tmp_path / "gpu.safetensors"
    assert cli(capsys, *QUANTIZE, "-o", cpu, "--device", "cpu")[0] == 0
    code, _, err = cli(capsys, *QUANTIZE, "-o", gpu, "--device", "cuda")
    assert code == 0, err
    a, b = load_file(str(cpu)), load_file(str(gpu))
    assert {k: (v.dtype, v.shape) for k, v in a.items()} == {k: (v.dtype, v.shape) for k, v in b.items()}
    for device in ("cpu", "cuda"):
        code, out, err = cli(capsys, "evaluate", gpu, "--data", DATA, "-T", "3", "--device", device, "--json", "-")
        assert code == 0, err


@needs_cuda
def test_qat_on_cuda_runs_and_saves(capsys, tmp_path):
    out = tmp_path / "qat.safetensors"
    code, _, err = cli(capsys, *QUANTIZE, "--mode", "qat", "--epochs", "1", "--train-data", DATA, "-o", out,
                       "--device", "cuda")
    assert code == 0, err
    assert out.exists()
