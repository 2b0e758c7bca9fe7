"""BatchNorm folding (issue 17): Conv/Linear + BatchNorm becomes one layer before quantization.

The folded model computes what the pair computed (up to float32 rounding), the BatchNorm is gone from
the architecture the file records, the quantize pass records the folded pairs in its history, and a
quantized Conv + BatchNorm net now rebuilds from its file and exports to NIR.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from snncompress.data.loading import DataBundle, DataOptions
from snncompress.export.nir_export import export_nir
from snncompress.fileformat.compressed import read_metadata, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.models.fold import fold_batchnorm
from snncompress.passes.base import PassContext
from snncompress.pipeline.run import RunOptions, run_single_pass
from snncompress.sim.runner import SNNRunner
from tests.models import TINY_MODELS, example_inputs


def _layer_outputs(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    out = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: out.setdefault("y", o))
    with torch.no_grad():
        SNNRunner(model).run(x, is_sequence=False, time_steps=1)
    handle.remove()
    return out["y"]


def test_fold_keeps_the_pair_output_and_replaces_batchnorm():
    for name, (conv, bn) in {"conv2d_net": ("0", "1"), "conv1d_net": ("0", "1")}.items():
        model = TINY_MODELS[name].build()
        x = example_inputs(name)
        before = _layer_outputs(model, x, bn)
        assert fold_batchnorm(model) == [f"{conv}+{bn}"]
        assert isinstance(model.get_submodule(bn), nn.Identity)
        after = _layer_outputs(model, x, conv)
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
        assert fold_batchnorm(model) == []  # nothing left to fold


def test_fold_adds_a_bias_when_the_layer_has_none():
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3)).eval()
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([0.1, -0.2, 0.3]))
        model[1].running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        assert fold_batchnorm(model) == ["0+1"]
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)
    assert model[0].bias is not None


def test_quantize_folds_records_it_and_the_file_rebuilds_and_exports(tmp_path):
    model = TINY_MODELS["conv2d_net"].build()
    x = example_inputs("conv2d_net")
    data = DataBundle("tiny", TensorDataset(x, torch.arange(x.shape[0]) % 4), False, 3, 4, DataOptions(time_steps=3))
    report = run_single_pass("quantize", model, {"calibration": "none"}, PassContext(data=data),
                             RunOptions(hardware=False))
    assert report.steps[0]["metrics"]["batchnorm_folded"] == ["0+1"]
    assert any("folded BatchNorm" in n for n in report.steps[0]["notes"])
    path = save_compressed(model, tmp_path / "q.safetensors")
    meta = read_metadata(path)
    assert "BatchNorm2d" not in str(meta["model"]["architecture"])
    assert meta["history"][-1]["metrics"]["batchnorm_folded"] == ["0+1"]
    loaded = load_model(str(path))
    with torch.no_grad():
        a = SNNRunner(model).run(x, is_sequence=False, time_steps=3).spikes
        b = SNNRunner(loaded).run(x, is_sequence=False, time_steps=3).spikes
    assert torch.equal(a, b)
    result = export_nir(loaded, tmp_path / "q.nir", x[0])
    assert result.path.exists()
