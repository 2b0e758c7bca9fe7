"""The prune pass (issue 11): masks against their definitions, masks kept through any fine-tuning, measured
sparsity, the binary membrane, joint pruning + quantization, bit-exact round trips, bad configs."""

from __future__ import annotations

import contextlib

import pytest
import torch
from pydantic import ValidationError

from snncompress.errors import ConfigError
from snncompress.fileformat.compressed import save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.passes.base import PassContext
from snncompress.passes.prune import PruneConfig, _SkipCounter
from snncompress.passes.prune_masks import cubic_sparsity, nm_mask, structured_mask, unstructured_mask
from snncompress.passes.registry import default_registry
from snncompress.pipeline.run import RunOptions, run_recipe, run_single_pass
from snncompress.sim.evaluate import evaluate
from snncompress.state import get_state
from tests.models import TINY_MODELS
from tests.sim.test_constraints import bundle

OPTIONS = RunOptions(hardware=False)
W = torch.tensor([[0.1, -3.0, 0.2, 0.0], [2.0, -0.05, 1.0, 0.3]])


def ctx(name="leaky_mlp"):
    return PassContext(data=bundle(name), train_data=bundle(name, seed=1))


def tiny(name="leaky_mlp"):
    return load_model(TINY_MODELS[name].ref)


# -- masks against their definitions, on hand-made tensors ------------------------------------------------

def test_unstructured_mask_prunes_the_smallest_magnitudes():
    mask = unstructured_mask(W, 0.5)  # 4 of 8: 0.0, -0.05, 0.1, 0.2
    assert mask.tolist() == [[False, True, False, False], [True, False, True, True]]
    assert not unstructured_mask(W, 0.0).logical_not().any()


def test_unstructured_mask_keeps_what_an_earlier_mask_pruned():
    keep = torch.ones_like(W, dtype=torch.bool)
    keep[0, 1] = False  # the largest weight, pruned earlier
    mask = unstructured_mask(W, 0.25, keep)  # 2 of 8: the pruned one counts, then the smallest (0.0)
    assert mask.tolist() == [[True, False, True, False], [True, True, True, True]]


def test_structured_mask_removes_the_lowest_norm_rows():
    w = torch.tensor([[1.0, 1.0], [0.1, 0.2], [3.0, 0.0], [0.0, 0.5]])
    mask = structured_mask(w, 0.5)
    assert mask.tolist() == [[True, True], [False, False], [True, True], [False, False]]
    conv = torch.ones(3, 2, 2, 2)
    conv[1] *= 0.1
    assert structured_mask(conv, 0.34)[1].logical_not().all() and structured_mask(conv, 0.34)[[0, 2]].all()


def test_nm_mask_keeps_n_largest_of_every_m():
    w = torch.tensor([[1.0, -4.0, 3.0, 0.5, 2.0, 2.0, 0.0, -1.0, 0.1, 0.9]])
    mask = nm_mask(w, 2, 4)  # groups [1,-4,3,.5] [2,2,0,-1] [.1,.9]: ties keep the earlier position
    assert mask.tolist() == [[False, True, True, False, True, True, False, False, True, True]]
    with pytest.raises(ValueError):
        nm_mask(w, 4, 4)


def test_cubic_schedule():
    values = [cubic_sparsity(0.8, t, 10) for t in range(11)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.8)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert values[1] == pytest.approx(0.8 * (1 - 0.9 ** 3))


# -- the pass ---------------------------------------------------------------------------------------------

def test_prune_is_registered():
    assert "prune" in default_registry().names()


def test_oneshot_unstructured_without_fine_tuning_sets_masks_and_measures_skipped_ops():
    model = tiny()
    report = run_single_pass("prune", model, {"weights_unstructured": 0.5, "epochs": 0}, ctx(), OPTIONS)
    state = get_state(model)
    metrics = report.steps[0]["metrics"]
    for layer in ("0", "2"):
        mask, weight = state.masks[f"{layer}.weight"], model.get_submodule(layer).weight.detach()
        assert mask.dtype == torch.bool and mask.shape == weight.shape
        assert int((~mask).sum()) == round(0.5 * mask.numel())
        assert bool((weight[~mask] == 0).all())
        assert metrics["layers"][layer]["weight_sparsity"] == pytest.approx(0.5)
    # the first layer sees real-valued (all non-zero) input: the skipped ops are exactly the pruned fraction
    assert metrics["layers"]["0"]["ops_skipped"] == pytest.approx(0.5)
    assert metrics["configured"] == 0.5 and 0 < metrics["ops_skipped"] < 1
    assert "accuracy_after" in metrics


def test_measured_skipped_ops_match_the_masks():
    model = tiny()
    run_single_pass("prune", model, {"weights_unstructured": 0.6, "epochs": 0}, ctx(), OPTIONS)
    masks = get_state(model).masks
    counter = _SkipCounter(model, ["0", "2"], masks)
    data = bundle("leaky_mlp")
    recorded = []

    @contextlib.contextmanager
    def recording():
        handle = model.get_submodule("2").register_forward_hook(lambda m, i, o: recorded.append(i[0].detach().ne(0)))
        yield
        handle.remove()

    evaluate(model, data, instruments=[counter, recording()])
    active = torch.cat(recorded).float()  # [samples * steps, 12]
    mask = masks["2.weight"].float()  # [4, 12]
    dense, kept = float(active.sum() * mask.shape[0]), float((active @ mask.T).sum())
    assert counter.dense["2"] == pytest.approx(dense) and counter.kept["2"] == pytest.approx(kept)


def test_structured_prunes_whole_neurons_with_their_bias():
    model = tiny()
    run_single_pass("prune", model, {"weights_structured": 0.5, "epochs": 1, "targets": ["0"]}, ctx(), OPTIONS)
    state = get_state(model)
    rows = state.masks["0.weight"].all(dim=1)
    assert int((~rows).sum()) == 6 and not state.masks["0.weight"][~rows].any()
    assert state.masks["0.bias"].tolist() == rows.tolist()
    assert bool((model.get_submodule("0").bias.detach()[~rows] == 0).all())
    assert "2.weight" not in state.masks


def test_gradual_reaches_the_target_and_keeps_it():
    model = tiny()
    report = run_single_pass("prune", model, {"weights_unstructured": 0.75, "schedule": "gradual", "epochs": 3,
                                              "lr": 0.05}, ctx(), OPTIONS)
    state = get_state(model)
    for layer in ("0", "2"):
        mask = state.masks[f"{layer}.weight"]
        assert int((~mask).sum()) == round(0.75 * mask.numel())
        assert bool((model.get_submodule(layer).weight.detach()[~mask] == 0).all())
    fine = report.steps[0]["metrics"]["fine_tune"]
    assert fine["ramp"]["epochs"] == 2 and fine["steady"]["epochs"] == 1 and fine["ramp_steps"] == 8


def test_prune_then_qat_keeps_both():
    model = tiny()
    recipe = {"version": 1, "passes": [
        {"pass": "prune", "weights_nm": "2:4", "epochs": 1, "lr": 0.05},
        {"pass": "quantize", "mode": "qat", "epochs": 1, "lr": 0.05, "weight_quant": "int4"}]}
    run_recipe(model, recipe, ctx(), OPTIONS)
    state = get_state(model)
    mask = state.masks["0.weight"]
    assert bool((mask.reshape(12, 2, 4).sum(dim=2) <= 2).all())
    weight = model.get_submodule("0").weight.detach()
    assert bool((weight[~mask] == 0).all()) and bool((weight[mask] != 0).any())
    enc = state.tensors["0.weight"]
    from snncompress.quant.base import WeightScheme
    assert torch.equal(WeightScheme.from_dict(enc.scheme).decode(enc).reshape(weight.shape), weight)


@pytest.mark.parametrize("epochs", [0, 1])
def test_qat_then_prune_keeps_both(epochs):
    model = tiny()
    recipe = {"version": 1, "passes": [
        {"pass": "quantize", "mode": "qat", "epochs": 1, "lr": 0.05, "weight_quant": "int4"},
        {"pass": "prune", "weights_unstructured": 0.5, "epochs": epochs, "lr": 0.05}]}
    run_recipe(model, recipe, ctx(), OPTIONS)
    state = get_state(model)
    from snncompress.quant.base import WeightScheme
    for layer in ("0", "2"):
        weight, mask, enc = (model.get_submodule(layer).weight.detach(), state.masks[f"{layer}.weight"],
                             state.tensors[f"{layer}.weight"])
        decoded = WeightScheme.from_dict(enc.scheme).decode(enc).reshape(weight.shape)
        assert torch.equal(decoded, weight)  # the codes say exactly what the model computes with
        assert bool((decoded[~mask] == 0).all())


def test_joint_prune_and_quantize_in_one_fine_tuning():
    model = tiny()
    report = run_single_pass("prune", model, {"weights_unstructured": 0.5, "epochs": 1, "weight_quant": "pot4"},
                             ctx(), OPTIONS)
    state = get_state(model)
    enc = state.tensors["0.weight"]
    assert enc.bits == 4
    weight = model.get_submodule("0").weight.detach()
    assert bool((weight[~state.masks["0.weight"]] == 0).all())
    assert report.steps[0]["metrics"]["joint_weight_quant"] == "pot4"


def test_pruned_file_round_trips_bit_exactly(tmp_path):
    model = tiny("conv2d_net")
    run_single_pass("prune", model, {"weights_unstructured": 0.7, "epochs": 0}, ctx("conv2d_net"), OPTIONS)
    path = save_compressed(model, tmp_path / "p.safetensors")
    loaded = load_model(str(path))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert set(get_state(loaded).masks) == set(get_state(model).masks)
    for name, mask in get_state(model).masks.items():
        assert torch.equal(get_state(loaded).masks[name], mask)
    again = save_compressed(loaded, tmp_path / "again.safetensors")
    assert again.read_bytes() == path.read_bytes()


def test_binary_membrane_silences_minus_one():
    model = tiny()
    recipe = {"version": 1, "passes": [
        {"pass": "quantize", "membrane_quant": "ternary", "weight_quant": "fp32", "calibration": "none"},
        {"pass": "prune", "binary_membrane": True}]}
    report = run_recipe(model, recipe, ctx(), RunOptions())
    for layer in ("1", "3"):
        assert get_state(model).neurons[layer]["membrane"]["levels_low"] == 0
    step = report.steps[1]
    assert step["metrics"]["binary_membrane"]["bits_after"] == 1 and "accuracy_drop" in step["metrics"]
    neurons = [la for la in report.measurements[-1].description.layers if hasattr(la, "membrane_bits")]
    assert neurons and all(la.membrane_bits == 1 for la in neurons)
    before = [la for la in report.measurements[-2].description.layers if hasattr(la, "membrane_bits")]
    assert all(la.membrane_bits == 2 for la in before)
    # the stored membrane never goes below zero now
    seen = []
    hook = model.get_submodule("1").register_forward_hook(lambda m, i, o: seen.append(m.mem.detach().clone()))
    evaluate(model, bundle("leaky_mlp"))
    hook.remove()
    assert all(bool((m >= 0).all()) for m in seen)


def test_binary_membrane_needs_a_ternary_membrane():
    from snncompress.recipes import RecipeError
    with pytest.raises((ConfigError, RecipeError), match="ternary"):
        run_single_pass("prune", tiny(), {"binary_membrane": True}, ctx(), OPTIONS)


@pytest.mark.parametrize("config", [
    {"weights_unstructured": 1.0}, {"weights_unstructured": -0.1}, {"weights_structured": 1.5},
    {"weights_nm": "4:4"}, {"weights_nm": "3:2"}, {"weights_nm": "two:four"},
    {"weights_unstructured": 0.5, "weights_nm": "2:4"},
    {"weights_nm": "2:4", "schedule": "gradual"}, {"weights_unstructured": 0.5, "schedule": "gradual", "epochs": 0},
    {"weights_unstructured": 0.5, "weight_quant": "pot99"},
])
def test_bad_configs_are_rejected(config):
    with pytest.raises(ValidationError):
        PruneConfig.model_validate(config)


def test_a_layer_the_model_lacks_is_rejected():
    from snncompress.recipes import RecipeError
    with pytest.raises((ConfigError, RecipeError), match="no module .fc9."):
        run_single_pass("prune", tiny(), {"weights_unstructured": 0.5, "epochs": 0, "targets": ["fc9"]}, ctx(),
                        OPTIONS)


# -- spatial pruning with membrane importance (Eq. 21-22) -----------------------------------------------------

def test_spatial_keep_masks_the_least_important_membrane_of_each_sample():
    from snncompress.models.spatial import spatial_keep
    mem = torch.tensor([[0.5, -2.0, 0.0, 1.0], [0.0, 0.0, -0.1, 3.0]])
    keep = spatial_keep(mem, 0.5, mem.shape)
    # sample 0: |u| 0.5, 2, 0, 1 -> drop 0 and 0.5; sample 1: ties at 0 broken by position
    assert keep.tolist() == [[False, True, False, True], [False, False, True, True]]
    assert spatial_keep(torch.zeros(0), 0.5, mem.shape) is None  # no membrane yet: keep all
    assert spatial_keep(torch.zeros(2, 4), 0.5, mem.shape).all()  # a reset membrane: the first step keeps all


def test_spatial_keep_matches_a_stable_sort_on_tie_heavy_membranes():
    from snncompress.models.spatial import spatial_keep
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        mem = torch.randint(-2, 3, (3, 17), generator=gen).float()  # integer levels: many ties
        ratio = float(torch.rand(1, generator=gen)) * 0.99
        keep, k = spatial_keep(mem, ratio, mem.shape), round(ratio * 17)
        for row in range(3):
            expected = torch.ones(17, dtype=torch.bool)
            if not (mem[row] == 0).all():
                expected[torch.sort(mem[row].abs(), stable=True).indices[:k]] = False
            assert torch.equal(keep[row], expected), (mem[row], ratio)


def test_spatial_pruning_masks_inputs_counts_skipped_ops_and_survives_save_load(tmp_path):
    from snncompress.costing.describe import Probe
    model = tiny()
    report = run_single_pass("prune", model, {"spatial": 0.5, "epochs": 0}, ctx(), RunOptions())
    metrics = report.steps[0]["metrics"]
    assert metrics["spatial"]["layers"] == {"1": {"ratio": 0.5, "source": "0"}}  # not the output layer
    assert get_state(model).neurons["1"]["spatial"] == {"ratio": 0.5, "source": "0"}
    # layer 0 sees real input on every output: 12 outputs x 8 inputs per step; after the first step, half masked
    data = bundle("leaky_mlp")
    probe = Probe(model)
    evaluate(model, data, instruments=[probe])
    assert probe.layers["0"].synaptic_ops == pytest.approx(len(data) * 8 * 12 * (1 + 0.5 * 2))
    assert metrics["synaptic_ops_reduction"] > 1 and metrics["importance_ops"] == 2 * 12 * 3
    # the hardware report counts the importance ranking as the feeding layer's gate work
    (layer0,) = [la for la in report.measurements[-1].description.layers if la.name == "0"]
    assert layer0.gate_ops_per_step == 2 * 12
    # the masked neurons got no current: their stored membrane only leaked
    loaded = load_model(str(save_compressed(model, tmp_path / "s.safetensors")))
    probe2 = Probe(loaded)
    evaluate(loaded, data, instruments=[probe2])
    assert probe2.layers["0"].synaptic_ops == probe.layers["0"].synaptic_ops
    assert evaluate(loaded, data).accuracy == evaluate(model, data).accuracy


def test_spatial_pruning_masks_the_neuron_input_before_accumulation():
    from snncompress.models.spatial import install_spatial_pruning
    model = tiny()
    install_spatial_pruning(model, "1", 0.5)
    neuron = model.get_submodule("1")
    seen = []
    handle = neuron.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    from snncompress.sim.runner import SNNRunner
    SNNRunner(model).run(TINY_MODELS["leaky_mlp"].example_inputs(4), is_sequence=False, time_steps=3)
    handle.remove()
    # the recording pre-hook runs after the mask: step 0 unmasked, later steps half zero per sample
    assert bool((seen[0] != 0).all())
    assert all(int((s == 0).sum(dim=1).min()) >= 6 for s in seen[1:])


def test_spatial_pruning_needs_a_sequential_feed():
    from snncompress.recipes import RecipeError
    with pytest.raises((ConfigError, RecipeError), match="nn.Sequential"):
        run_single_pass("prune", tiny("tutorial_net"), {"spatial": 0.35, "epochs": 0}, ctx("tutorial_net"), OPTIONS)


# -- spatial pruning behind a pooling (snnTorch tutorial 6: Conv2d -> MaxPool2d -> Leaky) ---------------------

def images(seed=0):
    """The 8 static images of ``tests.models:static_images`` as a bundle (batches of 4, T steps)."""
    from snncompress.data.loading import DataBundle, DataOptions
    from tests.models import CLASSES, T, static_images
    return DataBundle(f"images:{seed}", static_images(), False, T, CLASSES,
                      DataOptions(time_steps=T, batch_size=4, seed=seed))


def _windows(x, reduce):
    """[4, 4] -> [2, 2]: each 2x2 window reduced (a pooling by hand)."""
    return reduce(x.reshape(2, 2, 2, 2).permute(0, 2, 1, 3).reshape(2, 2, 4))


@pytest.mark.parametrize(("pool", "reduce", "shift"), [
    (torch.nn.MaxPool2d(2), lambda w: w.max(dim=-1).values, None),
    (torch.nn.AvgPool2d(2), lambda w: w.mean(dim=-1), None),
    (torch.nn.MaxPool2d(2), lambda w: w.max(dim=-1).values, 0.5),  # a BatchNorm's shift after the pooling
])
def test_spatial_pruning_behind_a_pooling_gives_a_masked_neuron_no_current(pool, reduce, shift):
    import snntorch as snn

    from snncompress.costing.describe import Probe
    from snncompress.models.spatial import install_spatial_pruning, output_keep
    from snncompress.sim.runner import SNNRunner
    conv = torch.nn.Conv2d(1, 1, 1, bias=False)  # each output is its own input: the pooling's input is x
    between = [pool]
    if shift is not None:
        bn = torch.nn.BatchNorm2d(1).eval()
        with torch.no_grad():
            bn.bias.fill_(shift)
        between.append(bn)
    model = torch.nn.Sequential(conv, *between, snn.Leaky(beta=0.5, threshold=100.0, init_hidden=True),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2),
                                snn.Leaky(beta=0.5, init_hidden=True, output=True)).eval()
    with torch.no_grad():
        conv.weight.fill_(1.0)
    neuron = str(len(between) + 1)
    assert install_spatial_pruning(model, neuron, 0.5) == "0"
    x = torch.tensor([[1., 9., 2., 3.], [4., 5., 6., 7.], [8., 0.5, 7.5, 2.5], [3.5, 1.5, 4.5, 6.5]])
    current = _windows(x, reduce)
    if shift is not None:
        current = current / (1 + bn.eps) ** 0.5 + shift
    mems, keeps = [], []
    model.get_submodule(neuron).register_forward_hook(lambda m, a, o: mems.append(m.mem[0, 0].detach().clone()))
    conv.register_forward_hook(lambda m, a, o: keeps.append(output_keep(m)))
    with Probe(model) as probe:
        SNNRunner(model).run(x.reshape(1, 1, 4, 4), is_sequence=False, time_steps=3)
    # by hand: no spike (threshold 100), so u[t] = 0.5 u[t-1] + keep[t] * I; keep[t] masks the two smallest |u[t-1]|
    mem = torch.zeros(2, 2)
    for t in range(3):
        keep = torch.ones(4, dtype=torch.bool)
        if t > 0:
            keep[mem.reshape(-1).abs().argsort()[:2]] = False
            assert torch.equal(keeps[t][0, 0], keep.reshape(2, 2).repeat_interleave(2, 0).repeat_interleave(2, 1))
        mem = 0.5 * mem + current * keep.reshape(2, 2)
        assert torch.allclose(mems[t], mem), (t, mems[t], mem)
    assert keeps[0] is None  # the first step: no prior, nothing masked
    # a 1x1 conv on 16 non-zero inputs: 16 ops a step, less the two masked windows' 8 after the first
    assert probe.layers["0"].synaptic_ops == 16 + 8 + 8


def test_spatial_pruning_behind_a_pooling_in_the_pass_counts_the_windows_and_round_trips(tmp_path):
    from snncompress.costing.describe import Probe, _connectivity
    from snncompress.models.spatial import spatial_keep
    from snncompress.sim.runner import SNNRunner
    from tests.models import T, pool_first_net
    model = pool_first_net()  # Conv2d(1->4) - MaxPool2d(2) - Leaky - Conv2d(4->4) - AvgPool2d(2) - Leaky - ...
    data = PassContext(data=images(), train_data=images(1))
    report = run_single_pass("prune", model, {"spatial": 0.5, "epochs": 0}, data, RunOptions())
    metrics = report.steps[0]["metrics"]
    assert metrics["spatial"]["layers"] == {"2": {"ratio": 0.5, "source": "0"}, "5": {"ratio": 0.5, "source": "3"}}
    # the ranking is per neuron, behind the pooling: 4x4x4 and 4x2x2 of them, not the 4x8x8 and 4x4x4 outputs
    assert metrics["importance_ops"] == 2 * (64 + 16) * T
    layers = {la.name: la for la in report.measurements[-1].description.layers}
    assert layers["0"].gate_ops_per_step == 2 * 64 and layers["3"].gate_ops_per_step == 2 * 16
    # the pass's figures are the report's
    assert metrics["synaptic_ops_after"] == pytest.approx(
        sum(layers[n].measured_synaptic_ops_per_sample for n in ("0", "3", "7")), abs=1e-3)
    before = {la.name: la for la in report.measurements[0].description.layers}
    assert metrics["synaptic_ops_before"] == pytest.approx(
        sum(before[n].measured_synaptic_ops_per_sample for n in ("0", "3", "7")), abs=1e-3)
    # the skipped ops of layer 0 are its outputs in the masked neurons' windows, counted from the priors by hand
    conv, neuron = model.get_submodule("0"), model.get_submodule("2")
    expected, inputs, priors = [0.0], [], []
    conv.register_forward_hook(lambda m, a, o: inputs.append(a[0].detach().ne(0).float()))
    neuron.register_forward_pre_hook(lambda m, a: priors.append(m.mem.detach().clone()))
    x = images().dataset.tensors[0]
    with Probe(model) as probe:
        spikes = SNNRunner(model).run(x, is_sequence=False, time_steps=T).spikes
    for active, prior in zip(inputs, priors, strict=True):
        used = _connectivity(conv, active, conv.weight.detach().ne(0).float())
        keep = spatial_keep(prior, 0.5, torch.Size((len(x), 4, 4, 4)))
        if keep is not None:
            used = used * torch.nn.functional.interpolate(keep.float(), scale_factor=2, mode="nearest")
        expected[0] += float(used.sum())
    assert probe.layers["0"].synaptic_ops == expected[0]
    assert probe.layers["0"].synaptic_ops < len(x) * T * 4 * 64 * 9  # some were skipped
    # the file: the masks reinstalled, the same spikes and op counts, the same bytes again
    path = save_compressed(model, tmp_path / "pool.safetensors")
    loaded = load_model(str(path))
    with Probe(loaded) as probe2:
        assert torch.equal(SNNRunner(loaded).run(x, is_sequence=False, time_steps=T).spikes, spikes)
    assert {n: a.synaptic_ops for n, a in probe2.layers.items()} == {n: a.synaptic_ops for n, a in probe.layers.items()}
    assert save_compressed(loaded, tmp_path / "again.safetensors").read_bytes() == path.read_bytes()


def test_spatial_pruning_refuses_an_overlapping_pooling():
    from snncompress.recipes import RecipeError
    from tests.models import overlapping_pool_net
    model = overlapping_pool_net()
    with pytest.raises((ConfigError, RecipeError), match=r"spatial pruning of '2': the pooling before it, "
                                                         r"MaxPool2d\(kernel_size=3, stride=2, padding=1"):
        run_single_pass("prune", model, {"spatial": 0.35, "epochs": 0},
                        PassContext(data=images(), train_data=images(1)), OPTIONS)
    assert "2" not in get_state(model).neurons


@pytest.mark.parametrize("pool", [torch.nn.MaxPool2d(2, stride=1), torch.nn.AvgPool2d(2, padding=1),
                                  torch.nn.MaxPool2d(2, dilation=2), torch.nn.MaxPool2d(2, ceil_mode=True)])
def test_overlapping_padded_or_dilated_poolings_are_refused_and_other_layers_still_break_the_feed(pool):
    import snntorch as snn

    from snncompress.models.spatial import install_spatial_pruning
    lif = dict(beta=0.9, init_hidden=True)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), pool, snn.Leaky(**lif))
    with pytest.raises(ConfigError, match="overlapping or padded windows"):
        install_spatial_pruning(model, "2", 0.5)
    # two poolings, a pooling after a Linear (it would pool across neurons), a 1d pooling after a Conv2d
    for layers in ([torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool2d(2), torch.nn.MaxPool2d(2)],
                   [torch.nn.Linear(8, 4), torch.nn.MaxPool1d(2)],
                   [torch.nn.Conv2d(1, 2, 3), torch.nn.MaxPool1d(2)]):
        model = torch.nn.Sequential(*layers, snn.Leaky(**lif))
        with pytest.raises(ConfigError, match="no synaptic layer directly before it|channel by channel"):
            install_spatial_pruning(model, str(len(layers)), 0.5)


def test_same_seed_same_bytes(tmp_path):
    paths = []
    for i in range(2):
        model = tiny()
        run_single_pass("prune", model, {"weights_unstructured": 0.5, "schedule": "gradual", "epochs": 2,
                                         "weight_quant": "int4"}, ctx(), OPTIONS)
        paths.append(save_compressed(model, tmp_path / f"run{i}.safetensors"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_an_override_sets_another_amount_for_one_layer():
    model = tiny()
    config = {"weights_unstructured": 0.5, "epochs": 0,
              "overrides": [{"targets": ["2"], "weights_unstructured": None, "weights_nm": "1:4"}]}
    run_single_pass("prune", model, config, ctx(), OPTIONS)
    masks = get_state(model).masks
    assert int((~masks["0.weight"]).sum()) == 48
    assert masks["2.weight"].reshape(4, 3, 4).sum(dim=2).eq(1).all()


def test_the_default_config_prunes_half_the_weights():
    assert PruneConfig().method() == ("unstructured", 0.5)
    assert PruneConfig(binary_membrane=True).method() is None
    assert PruneConfig(weights_nm="2:4").method() == ("nm", (2, 4))


def test_structured_by_default_leaves_the_last_layer_whole():
    """Its output rows are the classes: pruned only when targets name it."""
    model = tiny()
    report = run_single_pass("prune", model, {"weights_structured": 0.5, "epochs": 0}, ctx(), OPTIONS)
    state = get_state(model)
    assert "0.weight" in state.masks and "2.weight" not in state.masks
    assert any("last layer '2' is left whole" in n for n in report.steps[0]["notes"])
    named = tiny()
    run_single_pass("prune", named, {"weights_structured": 0.5, "epochs": 0, "targets": ["0", "2"]}, ctx(), OPTIONS)
    assert "2.weight" in get_state(named).masks
