"""PTQ on models in snnTorch's tutorial styles (issue 16, item 1): recurrent weights quantized and calibrated,
per-neuron membrane levels, the measured membrane clipping, and the note that says when QAT is needed."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from snncompress.data.loading import DataBundle, DataOptions
from snncompress.fileformat.loading import load_model
from snncompress.models.membrane import install_membrane_quantizer, membrane_quantizers
from snncompress.passes.base import PassContext
from snncompress.passes.ptq_review import membrane_clipping, review
from snncompress.passes.quantize import QuantizeConfig
from snncompress.pipeline.run import RunOptions, run_single_pass
from snncompress.quant.membrane import membrane_quantizer
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.sim.runner import SNNRunner
from snncompress.state import get_state
from tests.models import CLASSES, T, learned_per_neuron_mlp

OPTIONS = RunOptions(hardware=False)


def data(n: int = 8, seed: int = 0) -> DataBundle:
    x = torch.rand((n, 8), generator=torch.Generator().manual_seed(seed))
    return DataBundle(f"static:{seed}", TensorDataset(x, torch.arange(n) % CLASSES), False, T, CLASSES,
                      DataOptions(time_steps=T, batch_size=4, seed=seed))


def ptq(ref: str, config: dict, seed: int = 0):
    model = load_model(ref)
    ctx = PassContext(data=data(), train_data=data(seed=1), seed=seed)
    return model, run_single_pass("quantize", model, {"weight_quant": "pot4", "membrane_quant": "int4", **config},
                                  ctx, OPTIONS)


@pytest.mark.parametrize("ref,layers", [
    ("tests.models:rleaky_mlp", ["1.recurrent"]),  # the one-to-one V of layer 3 is a neuron parameter
    ("tests.models:rsynaptic_mlp", ["1.recurrent"]),
    ("tests.models:tutorial_rleaky_net", ["rlif1.recurrent", "rlif2.recurrent"]),
])
@pytest.mark.parametrize("calibration", ["none", "adaround"])
def test_recurrent_weights_are_quantized_and_calibrated(ref, layers, calibration):
    model, report = ptq(ref, {"calibration": calibration})
    metrics = report.steps[0]["metrics"]
    state = get_state(model)
    pot4 = parse_weight_scheme("pot4")
    for layer in layers:
        assert layer in metrics["layers_quantized"]
        enc = state.tensors[f"{layer}.weight"]
        assert torch.equal(model.get_submodule(layer).weight.detach(), pot4.decode(enc))
        if calibration == "adaround":
            assert layer in metrics["calibration"]["layers"]
    recurrent_bits = sum(model.get_submodule(n).weight.numel() for n in layers) * 32
    fp32_model = load_model(ref)
    assert metrics["weight_bits_before"] == sum(
        m.weight.numel() * 32 for n, m in fp32_model.named_modules() if isinstance(m, torch.nn.Linear)
        and not n.endswith(".recurrent")) + recurrent_bits


def test_recurrent_weights_fp32_when_asked():
    model, report = ptq("tests.models:tutorial_rleaky_net", {"recurrent_weights": "fp32", "calibration": "none"})
    fp32_model = load_model("tests.models:tutorial_rleaky_net")
    assert report.steps[0]["metrics"]["layers_quantized"] == ["fc1", "fc2"]
    assert "rlif1.recurrent.weight" not in get_state(model).tensors
    assert torch.equal(model.rlif1.recurrent.weight, fp32_model.rlif1.recurrent.weight)


def test_recurrent_weights_follow_the_neuron_layers_override():
    config = {"calibration": "none", "overrides": [{"targets": ["rlif1"], "weight_quant": "int8"}]}
    model, _ = ptq("tests.models:tutorial_rleaky_net", config)
    tensors = get_state(model).tensors
    assert tensors["rlif1.recurrent.weight"].bits == 8 and tensors["rlif2.recurrent.weight"].bits == 4


def test_per_neuron_levels_hold_each_neurons_threshold_exactly():
    """A per-neuron threshold gets its own level spacing Vth_i / grid: the threshold is ``grid`` levels up for
    every neuron, and a stored membrane equal to the threshold is stored exactly."""
    model = learned_per_neuron_mlp()
    quantizer, grid = membrane_quantizer("int4", None, None)
    install_membrane_quantizer(model, "1", quantizer, grid)
    unit = torch.tensor(membrane_quantizers(model)["1"]["unit"], dtype=torch.float64)
    threshold = model[1].threshold.detach().double()
    assert unit.shape == threshold.shape and len(set(unit.tolist())) == 12
    assert torch.equal(unit * grid, threshold)
    on_threshold = model[1].threshold.detach().expand(2, 12).contiguous()
    assert torch.equal(quantizer.quantize(on_threshold, unit.float()), on_threshold)


def test_clipping_counts_small_beta_resets():
    """Subtract reset stores v = u - Vth / beta: with int4 at 4 levels per threshold ([-2, 1.75] x Vth) the
    neurons with beta < 1 / 3.75 overflow the range whenever they fire."""
    model = learned_per_neuron_mlp()
    quantizer, grid = membrane_quantizer("int4", None, None)
    install_membrane_quantizer(model, "1", quantizer, grid)
    install_membrane_quantizer(model, "3", quantizer, grid)
    stats = membrane_clipping(model, data(), samples=8)
    beta = model[1].beta.detach()
    assert stats["1"]["reset_overflow"] == int(((beta > 0) & (beta < 1 / 3.75)).sum()) >= 1
    assert stats["3"]["reset_overflow"] == 0  # beta 0.6: Vth / beta = 1.67 Vth fits
    assert stats["1"]["range"] == [-2.0, 1.75]
    assert 0 < stats["1"]["clipped"] <= 1


def test_clipping_is_zero_on_a_wide_grid():
    model = learned_per_neuron_mlp()
    quantizer, grid = membrane_quantizer("int16", None, None, grid=4)
    install_membrane_quantizer(model, "1", quantizer, grid)
    assert membrane_clipping(model, data(), samples=8)["1"]["clipped"] == 0.0


def _metrics(drop: float) -> dict:
    return {"accuracy_drop": drop, "layers_quantized": ["0", "1.recurrent"],
            "membrane_clipping": {"1": {"clipped": 0.2, "below": 0.5, "range": [-2.0, 1.75], "reset_overflow": 3}},
            "calibration": {"layers": {"0": {"error_after": 0.002}, "1.recurrent": {"error_after": 0.05}}}}


def test_review_note_names_the_causes_above_the_bound():
    result = review(QuantizeConfig(ptq_drop_warning=0.5), _metrics(2.0))
    (note,) = result.notes
    assert note.startswith("PTQ lost 2.00 points (more than the 0.5 it is expected to keep)")
    assert "'1' stores 20.0% of its membrane values outside its levels [-2, 1.75] x Vth" in note
    assert "3 neurons with a beta so small" in note
    assert "'1.recurrent' keeps the largest weight error" in note
    assert "--mode qat" in note and "--membrane-grid auto" in note
    auto = review(QuantizeConfig(membrane_quant="int4", membrane_grid="auto"), _metrics(2.0)).notes[0]
    assert "--membrane-grid auto" not in auto and "more membrane bits" in auto  # it already has per-neuron levels
    assert result.metrics["ptq_review"]["advice"] == "qat"
    assert result.metrics["ptq_review"]["recurrent_layers"] == ["1.recurrent"]


@pytest.mark.parametrize("config,drop", [
    ({"ptq_drop_warning": 0.5}, 0.5),  # at the bound: within it
    ({"ptq_drop_warning": 0.5}, -1.0),
    ({"ptq_drop_warning": None}, 9.0),
    ({"ptq_drop_warning": 0.5, "mode": "qat"}, 9.0),  # QAT: no PTQ advice
])
def test_review_is_silent_within_the_bound(config, drop):
    result = review(QuantizeConfig(**config), _metrics(drop))
    assert result.notes == [] and result.metrics == {}


@pytest.mark.parametrize("bound", [0.0, 100.0])
def test_pipeline_adds_the_note_only_above_the_bound(bound):
    # ternary membrane and ternary weights without calibration: a tiny model that loses accuracy
    config = {"weight_quant": "ternary", "membrane_quant": "ternary", "calibration": "none",
              "ptq_drop_warning": bound}
    model = load_model("tests.models:learned_per_neuron_mlp")
    x = data(16).dataset.tensors[0]
    with torch.no_grad():  # labelled with the fp32 model's own answers: fp32 is 100% right
        labels = SNNRunner(model).run(x, is_sequence=False, time_steps=T).predictions()
    own = DataBundle("own", TensorDataset(x, labels), False, T, CLASSES, DataOptions(time_steps=T, batch_size=4))
    report = run_single_pass("quantize", model, config, PassContext(data=own, seed=0), OPTIONS)
    step = report.steps[0]
    drop = step["metrics"]["accuracy_drop"]
    assert drop > 0  # the premise of the check
    notes = [n for n in step["notes"] if n.startswith("PTQ lost")]
    assert len(notes) == (1 if bound < drop else 0)
    assert ("ptq_review" in step["metrics"]) == (bound < drop)
    assert set(step["metrics"]["membrane_clipping"]) == {"1", "3"}
    assert get_state(model).history[-1]["notes"] == step["notes"]  # the file's history says it too


def test_a_negative_learned_threshold_is_refused_naming_the_layer():
    from snncompress.errors import ConfigError

    model = learned_per_neuron_mlp()
    with torch.no_grad():
        model[1].threshold[3] = -0.02
    quantizer, grid = membrane_quantizer("int4", None, None)
    with pytest.raises(ConfigError, match=r"neuron layer '1' has 1 of 12 thresholds not positive.*lowest -0.02"):
        install_membrane_quantizer(model, "1", quantizer, grid)
