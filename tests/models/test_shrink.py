"""Shrinking a structurally pruned model (issue 11): the shrunk model gives the masked model's output spikes
exactly, with its quantization state sliced, saves and loads at its new sizes, needs no mask, and what cannot be
shrunk exactly is refused with one line, the model left as it was."""

from __future__ import annotations

import pytest
import torch

from snncompress.errors import ConfigError
from snncompress.fileformat.compressed import read_metadata, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.models.layers import synaptic_layers
from snncompress.models.membrane import copy_model
from snncompress.models.shrink import shrink_model
from snncompress.passes.base import PassContext
from snncompress.passes.prune import PruneConfig
from snncompress.passes.prune_masks import layer_masks
from snncompress.pipeline.run import RunOptions, run_single_pass
from snncompress.sim.constraints import KeepMasks
from snncompress.sim.observers import Recorder
from snncompress.sim.runner import SNNRunner
from snncompress.state import get_state
from tests.cli.support import assert_input_error
from tests.models import TINY_MODELS, tiny_bundle

STEPWISE = ["leaky_mlp", "synaptic_mlp", "subtract_reset_mlp", "zero_reset_mlp", "conv2d_net", "conv1d_net",
            "lapicque_mlp", "alpha_mlp"]


def masked(name: str, ratio: float):
    """The tiny model with every hidden synaptic layer structurally pruned (masks applied, as the pass does)."""
    model = load_model(TINY_MODELS[name].ref)
    state = get_state(model)
    for layer, module in synaptic_layers(model)[:-1]:
        state.masks.update(layer_masks(layer, module, "structured", ratio, state.masks))
    KeepMasks(state.masks).attach(model)
    return model


def spikes(model, name: str, seed: int = 0, steps: int = 4) -> torch.Tensor:
    return layer_spikes(model, name, seed, steps)["output"]


def layer_spikes(model, name: str, seed: int = 0, steps: int = 4) -> dict[str, torch.Tensor]:
    """Every neuron layer's spikes ``[T, B, ...]`` and the model's output spikes (``output``)."""
    tiny = TINY_MODELS[name]
    recorder = Recorder()
    runner = SNNRunner(model)
    with torch.no_grad(), runner.observe(recorder):
        out = runner.run(tiny.example_inputs(16, seed), is_sequence=tiny.is_sequence, time_steps=steps)
    return {**recorder.stacked()[0], "output": out.spikes}


def feeding_layers(model) -> dict[str, str]:
    """Each neuron layer's synaptic layer (the last one before it)."""
    from snncompress.models.neurons import neuron_layers

    order = [n for n, _ in model.named_modules()]
    synaptic = {n for n, _ in synaptic_layers(model)}
    return {neuron: [n for n in order[:order.index(neuron)] if n in synaptic][-1]
            for neuron, _ in neuron_layers(model)}


@pytest.mark.parametrize("name", STEPWISE)
@pytest.mark.parametrize(("ratio", "seed"), [(0.25, 0), (0.5, 1), (0.75, 2)])
def test_shrunk_model_gives_the_masked_models_spikes(name, ratio, seed):
    model = masked(name, ratio)
    if name == "conv1d_net":  # its BatchNorm shifts are positive (kept, tested below): make them negative
        with torch.no_grad():
            model.get_submodule("1").bias.copy_(-model.get_submodule("1").bias.abs() - 0.1)
    shrunk = copy_model(model)
    result = shrink_model(shrunk)
    assert result.layers, "something was removed"
    assert result.parameters_after < result.parameters_before
    ref, got = layer_spikes(model, name, seed), layer_spikes(shrunk, name, seed)
    assert torch.equal(got["output"], ref["output"])
    feeding = feeding_layers(model)
    for layer, value in ref.items():  # every hidden neuron: a kept one fires as before, a removed one never fired
        removed = result.removed.get(feeding.get(layer), [])
        if removed:
            gone = torch.zeros(value.shape[2], dtype=torch.bool)
            gone[removed] = True
            assert not value[:, :, gone].any(), layer
            value = value[:, :, ~gone]
        assert torch.equal(got[layer], value), layer
    for layer, (before, after) in result.layers.items():
        assert shrunk.get_submodule(layer).weight.shape[0] == after < before


def test_spikes_are_compared_on_active_models():
    # the equivalence above means something only where the neurons fire
    for name in STEPWISE:
        for ratio in (0.25, 0.5, 0.75):
            fired = layer_spikes(masked(name, ratio), name)
            assert sum(float(v.sum()) for k, v in fired.items() if k != "output") > 0, (name, ratio)
        assert spikes(masked(name, 0.25), name).sum() > 0, name


def test_flatten_removes_each_channels_block_and_batchnorm_is_sliced():
    model = masked("conv2d_net", 0.5)  # conv0(4) - bn - lif - pool - conv5(4) - lif - pool - flatten - fc9(16 in)
    rows = get_state(model).masks["5.weight"].reshape(4, -1).any(dim=1)
    shrunk = copy_model(model)
    shrink_model(shrunk)
    kept = torch.nonzero(rows).flatten()
    columns = (kept.unsqueeze(1) * 4 + torch.arange(4)).flatten()  # each channel is a 2x2 block of features
    assert torch.equal(shrunk.get_submodule("9").weight, model.get_submodule("9").weight[:, columns])
    bn = shrunk.get_submodule("1")
    assert bn.num_features == shrunk.get_submodule("0").out_channels == bn.running_mean.numel()


def test_per_neuron_beta_and_threshold_are_sliced():
    model = masked("subtract_reset_mlp", 0.5)
    keep = torch.nonzero(get_state(model).masks["0.weight"].any(dim=1)).flatten()
    shrunk = copy_model(model)
    shrink_model(shrunk)
    lif = shrunk.get_submodule("1")
    assert torch.equal(lif.beta, model.get_submodule("1").beta[keep])
    assert torch.equal(lif.threshold, model.get_submodule("1").threshold[keep])
    assert isinstance(lif.beta, torch.nn.Parameter)  # learnable stays learnable


def test_the_classes_are_kept_with_a_note():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    state = get_state(model)
    for layer, module in synaptic_layers(model):
        state.masks.update(layer_masks(layer, module, "structured", 0.5, state.masks))
    KeepMasks(state.masks).attach(model)
    result = shrink_model(model)
    assert model.get_submodule("2").out_features == 4 and "2.weight" in state.masks
    assert any("classes" in note for note in result.notes)
    with pytest.raises(ConfigError, match="last synaptic layer '2'"):
        shrink_model(model, ["2"])


def test_a_batchnorm_shift_that_fires_keeps_its_channel():
    model = masked("conv1d_net", 0.5)
    bn = model.get_submodule("1")
    with torch.no_grad():
        bn.bias.fill_(5.0)  # every pruned channel now fires without input
    shrunk = copy_model(model)
    result = shrink_model(shrunk)
    assert "0" not in result.layers and any("BatchNorm shift" in note for note in result.notes)
    assert torch.equal(spikes(shrunk, "conv1d_net"), spikes(model, "conv1d_net"))


# -- BatchNorm shifts decided per channel: a constant input a Leaky / Synaptic neuron provably never fires on --

def _bn_model(neuron: str, pool: str | None = None) -> torch.nn.Sequential:
    """A hidden layer of 8 outputs (channels) through a BatchNorm whose shifts are set per channel below;
    Linear for ``pool=None``, else Conv2d - BatchNorm2d - pool - neuron (4x4 inputs)."""
    import snntorch as snn
    from torch import nn

    torch.manual_seed(3)
    shape = (8,) if pool is None else (8, 1, 1)
    beta = torch.tensor([0.5, 0.5, -0.036, 0.5, 0.9, 1.02, 0.5, 0.5]).reshape(shape)  # raw: clamped to [0, 1]
    if neuron == "Leaky":
        lif = snn.Leaky(beta=beta, learn_beta=True, init_hidden=True)
    else:
        lif = snn.Synaptic(alpha=torch.full(shape, 0.5), beta=beta, learn_beta=True, init_hidden=True)
    if pool is None:
        head = [nn.Linear(6, 8), nn.BatchNorm1d(8), lif, nn.Linear(8, 4)]
    else:
        pools = {"max": nn.MaxPool2d(2), "avg": nn.AvgPool2d(2), "avg_padded": nn.AvgPool2d(3, 1, padding=1)}
        head = [nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), pools[pool], lif, nn.Flatten(),
                nn.Linear(8 * 16 if pool == "avg_padded" else 8 * 4, 4)]
    model = nn.Sequential(*head, snn.Leaky(beta=0.5, init_hidden=True, output=True))
    with torch.no_grad():  # an output layer that the hidden spikes drive
        model[-2].weight.uniform_(0.2, 1.2)
    bn = model[1]
    # Leaky limits c / (1 - clamp(beta)) against threshold 1 (Synaptic: c / ((1 - alpha)(1 - beta)))
    with torch.no_grad():
        bn.running_mean.copy_(torch.linspace(-0.2, 0.3, 8))
        bn.running_var.copy_(torch.linspace(0.5, 2.0, 8))
        bn.weight.copy_(torch.linspace(0.5, 1.5, 8))
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        # the constant each channel carries when pruned: negative; limit 0.4 (silent); 0.9 under the beta
        # clamped to 0 (silent); 1.6 (fires); 0.5 (silent); integrate-and-fire (beta 1.02 -> 1: fires in the end);
        # channel 6 stays unpruned; 0.9 (silent)
        gain = 1.0 if neuron == "Leaky" else 0.5  # Synaptic's (1 - alpha) divides the limit once more
        const = torch.tensor([-0.3, 0.2, 0.9, 0.8, 0.05, 0.01, -1.0, 0.45]) * gain
        bn.bias.copy_(const + bn.running_mean * scale)
    return model.eval()


def _run_spikes(model, x: torch.Tensor, steps: int = 30) -> dict[str, torch.Tensor]:
    recorder = Recorder()
    runner = SNNRunner(model)
    with torch.no_grad(), runner.observe(recorder):
        out = runner.run(x, is_sequence=False, time_steps=steps)
    return {**recorder.stacked()[0], "output": out.spikes}


def _prune_all_rows(model) -> None:
    """Structured masks on the hidden layer '0' removing every output (so each BatchNorm shift is tested),
    bias too; the last layer stays whole."""
    state = get_state(model)
    weight = model[0].weight
    state.masks["0.weight"] = torch.zeros_like(weight, dtype=torch.bool)
    state.masks["0.bias"] = torch.zeros(weight.shape[0], dtype=torch.bool)
    state.masks["0.weight"][[6]] = True  # one output stays (a model cut in two is refused)
    state.masks["0.bias"][6] = True
    KeepMasks(state.masks).attach(model)


@pytest.mark.parametrize(("neuron", "pool"), [("Leaky", None), ("Synaptic", None), ("Leaky", "max"),
                                              ("Leaky", "avg"), ("Synaptic", "max")])
def test_batchnorm_shifts_are_decided_per_channel_and_the_shrunk_model_is_exact(neuron, pool):
    model = _bn_model(neuron, pool)
    _prune_all_rows(model)
    x = torch.rand(6, 6) if pool is None else torch.rand(6, 1, 4, 4)
    ref = _run_spikes(model, x)
    hidden = ref["3" if pool is not None else "2"]  # [T, B, 8, ...]: which pruned channels fire on their shift
    fired = hidden.reshape(*hidden.shape[:3], -1).amax(dim=(0, 1, 3)).bool()
    # 3 fires on its shift within the run; 5 (integrate-and-fire) only after this run, but it is kept all the same
    assert fired[3] and not fired[[0, 1, 2, 4, 5, 7]].any()
    shrunk = copy_model(model)
    result = shrink_model(shrunk)
    assert result.removed["0"] == [0, 1, 2, 4, 7]
    assert any("2 of its 7 pruned outputs kept" in note for note in result.notes), result.notes
    got = _run_spikes(shrunk, x)
    assert torch.equal(got["output"], ref["output"]) and ref["output"].sum() > 0
    keep = [3, 5, 6]
    layer = "3" if pool is not None else "2"
    assert torch.equal(got[layer], ref[layer][:, :, keep])


def test_a_shift_above_the_limit_fires_and_is_kept():
    model = _bn_model("Leaky")
    with torch.no_grad():  # channel 1: c = 0.52 > (1 - 0.5) * 1: its membrane tends to 1.04 and crosses 1
        bn = model[1]
        bn.bias[1] = 0.52 + float(bn.running_mean[1] * bn.weight[1] / torch.sqrt(bn.running_var[1] + bn.eps))
    _prune_all_rows(model)
    ref = _run_spikes(model, torch.rand(6, 6))
    assert ref["2"][:, :, 1].any()  # it does fire
    result = shrink_model(copy_model(model))
    assert result.removed["0"] == [0, 2, 4, 7]


def test_a_padded_average_pool_passes_a_bound_not_the_constant():
    # zero padding averaged in: a value between 0 and c (still silent below the limit); exact spikes after
    model = _bn_model("Leaky", "avg_padded")
    _prune_all_rows(model)
    x = torch.rand(6, 1, 4, 4)
    ref = _run_spikes(model, x)
    shrunk = copy_model(model)
    result = shrink_model(shrunk)
    assert result.removed["0"] == [0, 1, 2, 4, 7]
    assert torch.equal(_run_spikes(shrunk, x)["output"], ref["output"])


def _silent(neuron, c, quantized=False, **params) -> bool:
    from snncompress.models.shrink import _Leaf, _neuron_silent

    c = torch.tensor([c], dtype=torch.float64)
    return bool(_neuron_silent(_Leaf("n", neuron(**params)), c, c, 1, 1, quantized)[0][0])


@pytest.mark.parametrize(("c", "beta", "silent"), [
    (0.0, 0.5, True), (-5.0, 0.5, True), (-5.0, -0.036, True),
    (0.4999, 0.5, True), (0.5 * (1 - 2e-4), 0.5, True),  # limit 2c: under the threshold by the margin
    (0.5 * (1 - 5e-5), 0.5, False), (0.5, 0.5, False),  # within the margin / at the threshold: kept
    (0.99, -0.036, True), (1.0, -0.036, False),  # a raw negative beta behaves as 0: the limit is c itself
    (1e-3, 1.0, False), (1e-3, 1.02, False),  # integrate-and-fire: any positive input fires eventually
    (0.0999, 0.9, True), (0.1001, 0.9, False),
])
def test_the_leaky_silence_rule_on_hand_values(c, beta, silent):
    import snntorch as snn

    assert _silent(snn.Leaky, c, beta=beta, threshold=1.0) is silent
    assert _silent(snn.Leaky, 2 * c, beta=beta, threshold=2.0) is silent  # the rule scales with the threshold
    # the simulation agrees where the rule says silent (float32, snnTorch's own step)
    lif = snn.Leaky(beta=beta, threshold=1.0)
    mem = lif.init_leaky()
    fired = False
    for _ in range(1200):
        spk, mem = lif(torch.tensor([c], dtype=torch.float32), mem)
        fired |= bool(spk.any())
    if silent:
        assert not fired
    elif beta >= 1 or c / (1 - max(0.0, beta)) > 1.001:
        assert fired  # clearly above the threshold: it does fire


def test_the_silence_rule_for_synaptic_other_neurons_and_membrane_quantizers():
    import snntorch as snn

    # Synaptic: limit c / ((1 - alpha)(1 - beta)) = 4c
    assert _silent(snn.Synaptic, 0.2499, alpha=0.5, beta=0.5)
    assert not _silent(snn.Synaptic, 0.25, alpha=0.5, beta=0.5)
    assert _silent(snn.Synaptic, 0.4999, alpha=-0.2, beta=0.5)  # alpha clamped to 0
    assert not _silent(snn.Synaptic, 0.01, alpha=1.0, beta=0.5)
    assert _silent(snn.Synaptic, -3.0, alpha=0.9, beta=0.9)
    # a negative threshold fires at rest; no closed form for Lapicque: only a zero input
    assert not _silent(snn.Leaky, 0.0, beta=0.5, threshold=-0.1)
    assert _silent(snn.Lapicque, 0.0, beta=0.5) and not _silent(snn.Lapicque, 0.01, beta=0.5)
    assert not _silent(snn.Lapicque, -1.0, beta=0.5)
    # a membrane quantizer rounds the stored membrane: only a non-positive input is bounded
    assert not _silent(snn.Leaky, 0.1, quantized=True, beta=0.5)
    assert _silent(snn.Leaky, -0.1, quantized=True, beta=0.5)
    # per neuron: a channel is silent only if all its neurons are
    from snncompress.models.shrink import _Leaf, _neuron_silent

    lif = snn.Leaky(beta=torch.tensor([[0.5, 0.9], [0.5, 0.5]]), threshold=1.0)
    c = torch.tensor([0.3, 0.3], dtype=torch.float64)
    assert _neuron_silent(_Leaf("n", lif), c, c, 2, 2, False)[0].tolist() == [False, True]


def test_batchnorm_bounds_with_batch_statistics_and_pools():
    from torch import nn

    from snncompress.models.shrink import _batchnorm_bounds, _passed_bounds

    bn = nn.BatchNorm1d(3, track_running_stats=False)
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.5, -0.5, 0.0]))
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.0]))
    zero = torch.zeros(3, dtype=torch.float64)
    lo, hi = _batchnorm_bounds(bn, zero, zero)  # a channel zero everywhere: normalized to 0, plus the bias
    assert torch.allclose(lo, bn.bias.double(), atol=1e-5) and torch.allclose(hi, bn.bias.double(), atol=1e-5)
    assert lo[0] <= 0.5 <= hi[0] and lo[2] == hi[2] == 0
    c = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)  # a nonzero constant normalized by its own batch
    lo, hi = _batchnorm_bounds(bn, c, c)
    assert torch.isinf(lo).all() and torch.isinf(hi).all() and not torch.isnan(lo).any()
    # a max-pool of a constant is that constant; zero padding averaged in pulls toward 0
    c = torch.tensor([0.3, -0.2], dtype=torch.float64)
    assert _passed_bounds(nn.MaxPool2d(2, padding=1), c, c) == (c, c)
    lo, hi = _passed_bounds(nn.AvgPool2d(3, padding=1), c, c)
    assert lo.tolist()[0] <= 0 and hi.tolist()[0] >= 0.3 and lo.tolist()[1] <= -0.2 and hi.tolist()[1] >= 0
    lo, hi = _passed_bounds(nn.AvgPool2d(2, divisor_override=1), c, c)  # a sum of 4: up to 4c
    assert hi[0] >= 1.2 and lo[1] <= -0.8


def test_a_shrink_that_removes_nothing_says_so():
    options = RunOptions(hardware=False)
    name = "conv1d_net"
    model = load_model(TINY_MODELS[name].ref)
    with torch.no_grad():
        model.get_submodule("1").bias.fill_(5.0)  # every pruned channel fires without input
    report = run_single_pass("prune", model, {"weights_structured": 0.5, "epochs": 0, "shrink": True,
                                              "targets": ["0"]}, ctx(name), options)
    notes = report.steps[0]["notes"]
    assert any(n.startswith("shrink: nothing removed") and "can fire without input" in n for n in notes), notes
    assert not any("pruned outputs removed" in n for n in notes)
    assert any("2 of its 2 pruned outputs kept" in n for n in notes), notes


def ctx(name: str) -> PassContext:
    return PassContext(data=tiny_bundle(name, 16), train_data=tiny_bundle(name, 16, seed=1))


@pytest.mark.parametrize("name", ["leaky_mlp", "conv2d_net", "subtract_reset_mlp"])
def test_quantized_shrunk_file_round_trips_with_no_mask(tmp_path, name):
    options = RunOptions(hardware=False)
    quantized = load_model(TINY_MODELS[name].ref)
    run_single_pass("quantize", quantized, {"weight_quant": "int8", "membrane_quant": "ternary",
                                            "calibration": "none"}, ctx(name), options)
    prune = {"weights_structured": 0.5, "epochs": 0, "targets": [n for n, _ in synaptic_layers(quantized)[:-1]]}
    masked_model, shrunk = copy_model(quantized), copy_model(quantized)
    run_single_pass("prune", masked_model, prune, ctx(name), options)
    report = run_single_pass("prune", shrunk, {**prune, "shrink": True}, ctx(name), options)
    assert report.steps[0]["metrics"]["shrink"]["layers"]
    assert torch.equal(spikes(shrunk, name), spikes(masked_model, name))
    state = get_state(shrunk)
    assert not state.masks  # every hidden layer is dense again
    for tname, enc in state.tensors.items():  # codes and per-channel scales sliced with their tensors
        assert tuple(enc.codes.shape) == tuple(shrunk.state_dict()[tname].shape), tname
    for layer, settings in state.neurons.items():  # a per-neuron membrane unit (per-neuron threshold) too
        if isinstance(settings.get("membrane_unit"), list):
            assert len(settings["membrane_unit"]) == shrunk.get_submodule(layer).threshold.numel(), layer
    path = save_compressed(shrunk, tmp_path / "s.safetensors")
    header = read_metadata(path)
    assert not any(spec.get("mask") for spec in header["tensors"].values())
    first = synaptic_layers(shrunk)[0][0]
    assert header["tensors"][f"{first}.weight"]["shape"] == list(shrunk.get_submodule(first).weight.shape)
    loaded = load_model(str(path))
    assert torch.equal(spikes(loaded, name), spikes(masked_model, name))
    assert save_compressed(loaded, tmp_path / "again.safetensors").read_bytes() == path.read_bytes()


def test_hardware_report_has_no_index_for_a_shrunk_layer():
    from snncompress.costing.measure import measure
    from snncompress.hardware.config import CostModelConfig
    from snncompress.hardware.memory import choose_format

    name = "leaky_mlp"
    masked_model = masked(name, 0.5)
    shrunk = copy_model(masked_model)
    shrink_model(shrunk)
    data = tiny_bundle(name, 16)
    before = {layer.name: layer for layer in measure(masked_model, data).description.layers}
    after = {layer.name: layer for layer in measure(shrunk, data).description.layers}
    config = CostModelConfig()
    assert choose_format(before["0"], config) != "dense" and before["0"].nonzero_weights is not None
    assert choose_format(after["0"], config) == "dense" and after["0"].nonzero_weights is None
    assert after["0"].weight_count == before["0"].nonzero_weights


@pytest.mark.parametrize("name", ["tutorial_net", "tutorial_sequence_net"])
def test_a_tutorial_module_shrinks_along_its_chain_and_loads_back(tmp_path, name):
    options = RunOptions(hardware=False)
    model = load_model(TINY_MODELS[name].ref, trust_code=True)
    masked_model, shrunk = copy_model(model), copy_model(model)
    prune = {"weights_structured": 0.5, "epochs": 0}  # every layer: the last one (the classes) stays masked
    run_single_pass("prune", masked_model, prune, ctx(name), options)
    report = run_single_pass("prune", shrunk, {**prune, "shrink": True}, ctx(name), options)
    assert report.steps[0]["metrics"]["shrink"]["layers"] == {"fc1": [12, 6]}
    assert shrunk.fc1.out_features == shrunk.fc2.in_features == 6 and shrunk.fc2.out_features == 4
    ref = spikes(masked_model, name, steps=3)
    assert ref.sum() > 0 and torch.equal(spikes(shrunk, name, steps=3), ref)
    path = save_compressed(shrunk, tmp_path / "t.safetensors")
    record = read_metadata(path)["model"]
    assert record["kind"] == "factory" and record["resized"]["fc1"]["args"]["out_features"] == 6
    loaded = load_model(str(path), trust_code=True)
    assert torch.equal(spikes(loaded, name, steps=3), ref)
    assert save_compressed(loaded, tmp_path / "again.safetensors").read_bytes() == path.read_bytes()
    named = load_model(TINY_MODELS[name].ref, weights=str(path))  # the factory named by the user: resized too
    assert torch.equal(spikes(named, name, steps=3), ref)


def test_a_resized_record_naming_a_missing_layer_is_refused():
    from snncompress.errors import ModelLoadError
    from snncompress.models.source import rebuild

    with pytest.raises(ModelLoadError, match="resizes layer 'fc9'"):
        rebuild({"kind": "factory", "factory": "tests.models:tutorial_net",
                 "resized": {"fc9": {"type": "Linear", "args": {"in_features": 2, "out_features": 2}}}},
                trust_code=True)


# -- what cannot be shrunk: one line, the model as it was ------------------------------------------------

def _unchanged(model, snapshot):
    after = model.state_dict()
    return set(after) == set(snapshot) and all(torch.equal(after[k], v) for k, v in snapshot.items())


@pytest.mark.parametrize(("name", "match"), [
    ("tutorial_net", "shrinking TutorialNet, a user module, needs the chain of its layers"),
    ("rleaky_mlp", "all-to-all recurrent"),
])
def test_models_that_cannot_shrink_are_refused(name, match):
    model = load_model(TINY_MODELS[name].ref, trust_code=True) if name.startswith("tutorial") else \
        load_model(TINY_MODELS[name].ref)
    state = get_state(model)
    for layer, module in synaptic_layers(model)[:-1]:
        state.masks.update(layer_masks(layer, module, "structured", 0.5, state.masks))
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=match):
        shrink_model(model)
    assert _unchanged(model, snapshot)


def test_spatial_pruning_and_unknown_layers_are_refused():
    from snncompress.models.spatial import install_spatial_pruning

    model = masked("leaky_mlp", 0.5)
    with pytest.raises(ConfigError, match="not a synaptic layer"):
        shrink_model(model, ["1"])
    install_spatial_pruning(model, "1", 0.35)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    masks = {k: v.clone() for k, v in get_state(model).masks.items()}
    with pytest.raises(ConfigError, match="spatial"):
        shrink_model(model)
    assert _unchanged(model, snapshot) and all(torch.equal(get_state(model).masks[k], v) for k, v in masks.items())


def test_config_needs_structured_pruning():
    with pytest.raises(ValueError, match="shrink .* needs weights_structured"):
        PruneConfig(weights_unstructured=0.5, shrink=True)
    with pytest.raises(ValueError, match="spatial"):
        PruneConfig(weights_structured=0.5, spatial=0.3, shrink=True)


def test_cli_shrink(capsys, tmp_path):
    from tests.cli.support import cli

    data = "tests.models:static_dataset"
    out = tmp_path / "s.safetensors"
    code, stdout, err = cli(capsys, "prune", "tests.models:leaky_mlp", "--data", data, "-o", out, "--epochs", 0,
                            "--weights-structured", 0.5, "--shrink", "-T", 3)
    assert code == 0, err
    assert "shrink: 6 pruned outputs removed" in stdout + err
    assert read_metadata(out)["tensors"]["0.weight"]["shape"] == [6, 8]
    bad = tmp_path / "bad.safetensors"
    assert_input_error(capsys, "prune", "tests.models:leaky_mlp", "--data", data, "-o", bad, "--epochs", 0,
                       "--weights-unstructured", 0.5, "--shrink", match="needs weights_structured")
    assert not bad.exists()
    assert_input_error(capsys, "prune", "tests.models:rleaky_mlp", "--data", data, "-o", bad, "--epochs", 0,
                       "--weights-structured", 0.5, "--shrink", "-q", match="all-to-all recurrent")
    assert not bad.exists()
    code, stdout, err = cli(capsys, "prune", "tests.models:tutorial_net", "--trust-code", "--data", data, "-o",
                            tmp_path / "t.safetensors", "--epochs", 0, "--weights-structured", 0.5, "--shrink")
    assert code == 0, err
    assert read_metadata(tmp_path / "t.safetensors")["tensors"]["fc2.weight"]["shape"] == [4, 6]
