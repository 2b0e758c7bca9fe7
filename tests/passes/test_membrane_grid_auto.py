"""``membrane_grid: auto``: per-neuron membrane levels chosen on calibration data (issue 16, item 1)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch.utils.data import TensorDataset

from snncompress.data.loading import DataBundle, DataOptions
from snncompress.fileformat.compressed import save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.integer.verify import verify
from snncompress.models.membrane import install_membrane_quantizer, membrane_quantizers
from snncompress.passes.base import PassContext
from snncompress.passes.membrane_grid import calibrate_units, candidate_grids
from snncompress.passes.ptq_review import membrane_clipping
from snncompress.passes.quantize import QuantizeConfig
from snncompress.passes.quantize import apply as quantize
from snncompress.quant.membrane import membrane_quantizer
from tests.models import CLASSES, TINY_MODELS, T, learned_per_neuron_mlp


def data(n: int = 8, seed: int = 0) -> DataBundle:
    x = torch.round(torch.rand((n, 8), generator=torch.Generator().manual_seed(seed)) * 16) / 16
    return DataBundle("static", TensorDataset(x, torch.arange(n) % CLASSES), False, T, CLASSES,
                      DataOptions(time_steps=T, batch_size=4, seed=seed))


def tiny_threshold_model():
    """learned_per_neuron_mlp with neuron 0's threshold 100x smaller than its neighbours' (a learned one)."""
    model = learned_per_neuron_mlp()
    with torch.no_grad():
        model[1].threshold[0] = 0.01
    return model


def test_candidates_are_powers_of_two_around_the_default():
    assert candidate_grids(4) == [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8]


def test_auto_gives_a_tiny_threshold_a_coarser_grid_and_never_a_larger_error():
    model = tiny_threshold_model()
    quantizer, grid = membrane_quantizer("int4", None, None)
    install_membrane_quantizer(model, "1", quantizer, grid)
    before = membrane_clipping(model, data(), samples=8)["1"]["clipped"]
    report = calibrate_units(model, ["1"], data(), samples=8)
    unit = torch.tensor(membrane_quantizers(model)["1"]["unit"], dtype=torch.float64)
    chosen = model[1].threshold.detach().double() / unit
    assert set(torch.log2(chosen).tolist()) <= {float(j) for j in range(-4, 4)}  # powers of two
    assert chosen[0] < grid  # the 0.01 threshold: fewer levels per threshold than the default 4
    assert report["1"]["error_auto"] <= 1.0  # the default grid is a candidate
    assert membrane_clipping(model, data(), samples=8)["1"]["clipped"] < before


def test_auto_through_the_pass_saves_and_loads_the_units(tmp_path):
    model = tiny_threshold_model()
    config = QuantizeConfig(weight_quant="pot4", membrane_quant="int4", membrane_grid="auto", calibration="none")
    result = quantize(model, config, PassContext(data=data(), train_data=data(seed=1)))
    assert set(result.metrics["membrane_grid_auto"]) == {"1", "3"}
    units = membrane_quantizers(model)
    loaded = load_model(str(save_compressed(model, tmp_path / "m.safetensors")))
    assert membrane_quantizers(loaded)["1"]["unit"] == units["1"]["unit"]


def test_auto_keeps_integer_verification():
    name = "zero_reset_mlp"
    model = TINY_MODELS[name].build()
    bundle = DataBundle("tiny", TensorDataset(torch.round(TINY_MODELS[name].example_inputs(8, seed=1) * 16) / 16,
                                              torch.arange(8) % CLASSES), False, 3, CLASSES,
                        DataOptions(time_steps=3, batch_size=4))
    config = QuantizeConfig(weight_quant="pot4", membrane_quant="int4", membrane_grid="auto", calibration="none")
    quantize(model, config, PassContext(data=bundle))
    assert verify(model, bundle).bit_exact


@pytest.mark.parametrize("kwargs,message", [
    ({"membrane_quant": "ternary", "membrane_grid": "auto"}, "applies to int<k> membranes"),
    ({"membrane_quant": "int4", "membrane_grid": "auto", "clip": -1}, "picks one per neuron"),
])
def test_auto_refuses_what_it_cannot_do(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        QuantizeConfig(**kwargs)
