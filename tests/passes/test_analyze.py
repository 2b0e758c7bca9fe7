"""The analyze pass (membrane clipping analysis, SpQuant §4.1): Gamma_u, r_s and U_min against a hand-computed
layer, the clip acting as the quantize pass's clip, one run per boundary, the model left unchanged, the
recommendation, and ``clip: auto`` taking it in a recipe."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn
from torch.utils.data import TensorDataset

from snncompress.data.loading import DataBundle, DataOptions
from snncompress.errors import ConfigError
from snncompress.fileformat.loading import load_model
from snncompress.models.membrane import clipped_membrane, copy_model, install_membrane_quantizer
from snncompress.passes.analyze import (
    AnalyzeConfig,
    BoundaryResult,
    analyze_clipping,
    fits,
    parse_clip_range,
    recommend,
)
from snncompress.passes.base import PassContext
from snncompress.pipeline.run import RunOptions, run_recipe
from snncompress.quant.membrane import membrane_quantizer
from snncompress.sim.observers import Recorder
from snncompress.sim.runner import SNNRunner
from snncompress.state import get_state, has_state
from tests.models import CLASSES, TINY_MODELS, T

# One Leaky layer (beta 0.5, Vth 1, reset by subtraction), fed these currents directly as event frames
# [T = 4, neurons = 4]. snnTorch: u[t] = 0.5 u[t-1] + I[t] - s[t-1]; the stored membrane is
# v[t] = u[t] - s[t] * Vth / beta = u[t] - 2 s[t]. By hand:
#   n0  I -3, 2.25, 2, 0    u -3, 0.75, 2.375*, 0.1875    v[1] = -3     fires at t = 3
#   n1  I -1.5, 0, 0, 0     u -1.5, -0.75, -0.375, ...    v[1] = -1.5   never fires
#   n2  I -2.5, 3, 0.5, 2   u -2.5, 1.75*, 0.375, 2.1875*  v[1] = -2.5   fires at t = 2 and 4
#   n3  I 1.5, 0, 0, 0      u 1.5*, -0.25, ...            v[1] = -0.5   fires at t = 1 only
CURRENTS = torch.tensor([[-3.0, -1.5, -2.5, 1.5], [2.25, 0, 3, 0], [2, 0, 0.5, 0], [0, 0, 2, 0]])
BOUNDARIES = [-2.0, -1.0, -0.5]
# Gamma_u(-2) = {n0, n2}: 2/4; Gamma_u(-1) = Gamma_u(-0.5) = {n0, n1, n2}: 3/4 (n3 at exactly -0.5 is not below)
GAMMA_U = [0.5, 0.75, 0.75]
# r_s: at t = 2, 3, 4 one neuron of Gamma_u fires each time (n2, n0, n2): 1/2 and 1/3 per step
R_S = [1 / 2, 1 / 3, 1 / 3]
R_EVER = [1.0, 2 / 3, 2 / 3]  # n0 and n2 fire later, n1 never
U_MIN = -3.0
# clipped at c = -2 or -1 (max(v, c)): n0 fires at t = 2 and 3, the rest as before
CLIPPED_SPIKES = torch.tensor([[0, 0, 0, 1], [1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.float32)
UNCLIPPED_SPIKES = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.float32)


def one_layer() -> nn.Sequential:
    return nn.Sequential(snn.Leaky(beta=0.5, init_hidden=True, output=True))


def hand_data(label: int = 2) -> DataBundle:
    # label 2: unclipped spike counts (1, 0, 2, 1) -> class 2; clipped (2, 0, 2, 1) -> class 0
    x, y = CURRENTS.unsqueeze(0), torch.tensor([label])
    return DataBundle("hand", TensorDataset(x, y), True, 4, 4, DataOptions(time_steps=4, batch_size=1))


def bundle(name: str, n: int = 8) -> DataBundle:
    model = TINY_MODELS[name]
    x, y = model.example_inputs(n, 0), torch.arange(n) % CLASSES
    return DataBundle(name, TensorDataset(x, y), model.is_sequence, T, CLASSES,
                      DataOptions(time_steps=T, batch_size=4))


def spikes_of(model: nn.Module, data: DataBundle) -> torch.Tensor:
    recorder = Recorder()
    runner = SNNRunner(model)
    with runner.observe(recorder), torch.no_grad():
        runner.run(data.dataset.tensors[0], is_sequence=True, time_steps=4)
    return recorder.stacked()[0]["0"][:, 0]  # [T, neurons] of the one sample


def test_gamma_u_r_s_and_u_min_match_the_hand_computed_layer():
    data = hand_data()
    assert torch.equal(spikes_of(one_layer(), data), UNCLIPPED_SPIKES)  # the hand computation holds
    config = AnalyzeConfig(clip_range=",".join(str(c) for c in BOUNDARIES), tolerance=0.5)
    analysis = analyze_clipping(one_layer(), config, data)
    (layer,) = analysis.layers
    assert (layer.name, layer.neurons, analysis.time_steps, analysis.samples) == ("0", 4, 4, 1)
    assert layer.u_min == U_MIN
    assert layer.gamma_u == GAMMA_U
    assert layer.r_s == pytest.approx(R_S)
    assert layer.r_ever == pytest.approx(R_EVER)
    assert sum(layer.histogram["counts"]) == 16 and layer.histogram["start"] == U_MIN  # every v[t], from -3 up
    # step 2: clipped at any of these boundaries, n0 fires one more time and the sample is misclassified
    assert analysis.accuracy == 100.0
    assert [p.accuracy for p in analysis.sweep] == [0.0, 0.0, 0.0]
    assert analysis.recommended is None and "no clip suggested" in analysis.recommendation()


def test_statistics_pool_samples_and_batches():
    """Two copies of the sample in two batches give the same fractions as one."""
    data = hand_data()
    x, y = data.dataset.tensors
    twice = DataBundle("hand2", TensorDataset(torch.cat([x, x]), torch.cat([y, y])), True, 4, 4,
                       DataOptions(time_steps=4, batch_size=1))
    (layer,) = analyze_clipping(one_layer(), AnalyzeConfig(clip_range="-2,-1,-0.5"), twice).layers
    assert layer.gamma_u == GAMMA_U and layer.r_s == pytest.approx(R_S) and layer.r_ever == pytest.approx(R_EVER)


@pytest.mark.parametrize("boundary", [-2.0, -1.0])
def test_the_clip_acts_on_the_stored_membrane_as_the_quantize_pass_clip(boundary):
    data = hand_data()
    model = one_layer()
    with clipped_membrane(model, ["0"], boundary):
        clipped = spikes_of(model, data)
    assert torch.equal(clipped, CLIPPED_SPIKES)  # by hand: max(v[1], c) lets n0 fire at t = 2
    # the quantize pass's own clip on a grid fine enough to hold every membrane here exactly (1/256 Vth)
    quantized = one_layer()
    quantizer, grid = membrane_quantizer("int12", boundary, None, 256)
    install_membrane_quantizer(quantized, "0", quantizer, grid)
    assert torch.equal(spikes_of(quantized, data), clipped)
    assert torch.equal(spikes_of(model, data), UNCLIPPED_SPIKES)  # and the hook is gone


def _snapshot(model: nn.Module) -> dict:
    return {
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": [(n, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()],
        "mem_reset": [n for n, m in model.named_modules() if "mem_reset" in m.__dict__],
        "training": [m.training for m in model.modules()],
        "has_state": has_state(model),
    }


@pytest.mark.parametrize("name", ["leaky_mlp", "tutorial_net", "tutorial_sequence_net"])
def test_analyze_leaves_the_model_unchanged(name):
    model = load_model(TINY_MODELS[name].ref)
    model.train()  # a mode the analysis must give back
    data = bundle(name)
    x = data.dataset.tensors[0]
    runner = SNNRunner(model)
    with torch.no_grad():
        before_out = runner.run(x, is_sequence=data.is_sequence, time_steps=T).spikes
    before = _snapshot(model)
    analyze_clipping(model, AnalyzeConfig(clip_range="-1.5:-0.5:0.5"), data)
    after = _snapshot(model)
    assert after.keys() == before.keys()
    for key in ("hooks", "mem_reset", "training", "has_state"):
        assert after[key] == before[key], key
    assert all(torch.equal(before["state_dict"][k], v) for k, v in after["state_dict"].items())
    with torch.no_grad():
        assert torch.equal(SNNRunner(model).run(x, is_sequence=data.is_sequence, time_steps=T).spikes, before_out)


@pytest.mark.parametrize("name", ["leaky_mlp", "conv2d_net", "synaptic_mlp", "tutorial_net", "tutorial_sequence_net"])
def test_one_run_per_boundary_and_one_for_the_statistics_in_both_styles(name):
    runs = []

    class Counting(DataBundle):
        def loader(self, shuffle=False, seed=None):
            runs.append(1)
            return super().loader(shuffle, seed)

    base = bundle(name)
    data = Counting(base.name, base.dataset, base.is_sequence, base.time_steps, base.num_classes, base.options)
    model = load_model(TINY_MODELS[name].ref)
    analysis = analyze_clipping(model, AnalyzeConfig(clip_range="-2:-0.5:0.5", tolerance=100), data)
    assert len(runs) == 1 + 4  # unclipped (all statistics) + one per boundary
    neuron_layers = [n for n, m in model.named_modules() if isinstance(m, snn.SpikingNeuron)]
    assert [layer.name for layer in analysis.layers] == neuron_layers
    for layer in analysis.layers:
        assert layer.gamma_u == sorted(layer.gamma_u)  # a higher boundary holds more neurons
        assert layer.u_min <= 0 or layer.gamma_u[0] == 0
        assert all(r is None or 0 <= r <= 1 for r in layer.r_s)
    assert analysis.recommended == -0.5  # any accuracy is within 100 points: the most aggressive boundary


def test_recommendation_is_the_most_aggressive_eligible_boundary_within_tolerance():
    def result(c, acc, ok=True):
        return BoundaryResult(c, acc, 90 - acc, ok, {})

    sweep = [result(-3, 90.0), result(-2, 89.6), result(-1.5, 89.0), result(-1, 89.5, ok=False)]
    assert recommend(90.0, sweep, 0.5) == -2  # -1 is within tolerance but off the target grid
    assert recommend(90.0, sweep, 1.0) == -1.5
    assert recommend(90.0, sweep, 0.0) == -3
    assert recommend(95.0, sweep, 0.5) is None


def test_clip_range_and_grid_eligibility():
    assert parse_clip_range("-5:-1:0.5") == [-5.0, -4.5, -4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0]
    assert parse_clip_range("-1,-3, -2") == [-3.0, -2.0, -1.0]
    assert parse_clip_range("-0.3:-0.1:0.1") == [-0.3, -0.2, -0.1]  # exact decimal steps, both ends
    for bad, match in [("-1:-5:0.5", "START must not be above STOP"), ("-5:-1:0", "STEP must be positive"),
                       ("-2:0:1", "not below 0"), ("a:b", "expected START:STOP:STEP"),
                       ("-100:-1:1", "at most 64")]:
        with pytest.raises(ConfigError, match=match):
            parse_clip_range(bad)
    # int4 at its default grid (4 per Vth) takes multiples of 0.25 in -2 .. -0.25; ternary only -1
    config = AnalyzeConfig(clip_range="-3:-1:0.5", membrane_quant="int4")
    assert config.eligible() == [False, False, True, True, True]
    assert AnalyzeConfig(clip_range="-3:-1:0.5", membrane_quant="int4", membrane_grid=1).eligible() == [
        True, False, True, False, True]
    assert AnalyzeConfig(membrane_quant="ternary").eligible() == [False] * 8 + [True]
    assert fits(-1.0, "ternary") and not fits(-2.0, "ternary") and fits(-0.25, "int4") and not fits(-0.3, "int4")
    with pytest.raises(ValueError, match="no boundary of '-3:-2:0.5' fits ternary"):
        AnalyzeConfig(clip_range="-3:-2:0.5", membrane_quant="ternary")
    with pytest.raises(ValueError, match="fp32 membrane takes no clip"):
        AnalyzeConfig(membrane_quant="fp32")


def test_a_quantized_membrane_is_refused():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    quantizer, grid = membrane_quantizer("int4", None, None)
    install_membrane_quantizer(model, "1", quantizer, grid)
    with pytest.raises(ConfigError, match="'1' already stores a quantized membrane"):
        analyze_clipping(model, AnalyzeConfig(), bundle("leaky_mlp"))


def test_clip_auto_takes_the_recommendation_in_a_recipe():
    data = bundle("leaky_mlp")
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    reference = analyze_clipping(copy_model(model), AnalyzeConfig(clip_range="-2:-0.5:0.5", membrane_quant="int4",
                                                                   tolerance=5), data)
    recipe = {"version": 1, "passes": [
        {"pass": "analyze", "clip_range": "-2:-0.5:0.5", "membrane_quant": "int4", "tolerance": 5},
        {"pass": "quantize", "calibration": "none", "membrane_quant": "int4", "weight_quant": "int8", "clip": "auto"}]}
    report = run_recipe(model, recipe, PassContext(data=data), RunOptions(hardware=False))
    analyze_step, quantize_step = report.steps
    clip = reference.recommended
    assert clip is not None
    assert analyze_step["suggestions"] == {"clip": clip}
    assert analyze_step["metrics"]["accuracy"] == report.before["accuracy"]  # the same unclipped model
    assert "histogram" not in analyze_step["metrics"]["layers"][0]  # the pass history stays small
    assert quantize_step["metrics"]["clip"] == clip
    assert any(f"clip: auto -> {clip:g}" in n for n in quantize_step["notes"])
    state = get_state(model)
    for layer in ("1", "3"):
        assert state.neurons[layer]["membrane"]["levels_low"] == int(clip * state.neurons[layer]["membrane_grid"])
