"""Adaptive rounding (AdaRound) in PTQ: ``snncompress/passes/calibration.py`` and the grid methods of the
weight schemes it relies on (``grid_params``, ``grid_neighbours``, ``encode_values``).

What is checked:

* every scheme: its grid parameters are the ones ``encode`` picks, its own rounding is one of the two
  neighbours, ``encode_values(decode(enc), enc.params)`` gives back ``enc``'s codes, off-grid values are
  refused;
* the im2col rows reproduce each convolution layout;
* on the tiny models with every scheme: the chosen weights are on the grid (codes in range, round trip,
  ``weight == decode(codes)``), and their output error on the calibration inputs is at most the scheme's
  own rounding's (measured directly on a first layer, whose inputs do not depend on the quantization);
* same seed, same codes; QAT ignores the option; ``calibration: none`` keeps the scheme's own codes;
  pruned weights stay zero; the data source and the notes;
* the demo model (pot4 weights, int4 membrane): adaptive rounding is at least as accurate as none.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from snncompress.data.loading import DataBundle, DataOptions, load_data
from snncompress.errors import InputError
from snncompress.fileformat.compressed import load_compressed, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.models.layers import synaptic_layers
from snncompress.models.membrane import copy_model
from snncompress.passes.base import PassContext
from snncompress.passes.calibration import (
    AdaRoundSettings,
    InputMoments,
    _Objective,
    adaround,
    flip_descent,
    input_rows,
    supports_adaround,
    weight_matrix,
)
from snncompress.passes.quantize import QuantizeConfig, apply
from snncompress.pipeline.run import RunOptions, run_single_pass
from snncompress.quant import ApotScheme, FixedPointScheme, IntScheme, PotScheme, TernaryScheme
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.state import get_state
from tests.models import CLASSES, TINY_MODELS, T

SCHEMES = ["pot4", "apot4", "int4", "ternary", "fixed1.6"]
MODELS = ["leaky_mlp", "conv2d_net", "conv1d_net", "tutorial_net", "tutorial_sequence_net"]
FAST = {"calibration_iters": 40}


def bundle(name: str, n: int = 16, seed: int = 0) -> DataBundle:
    model = TINY_MODELS[name]
    x, y = model.example_inputs(n, seed), torch.arange(n) % CLASSES
    return DataBundle(f"{name}:{seed}", TensorDataset(x, y), model.is_sequence, T, CLASSES,
                      DataOptions(time_steps=T, batch_size=8, seed=seed))


def quantize(name: str, weight_quant: str, *, seed: int = 0, train: bool = True, **config):
    model = load_model(TINY_MODELS[name].ref)
    ctx = PassContext(data=bundle(name), train_data=bundle(name, seed=1) if train else None, seed=seed)
    cfg = QuantizeConfig(mode="ptq", weight_quant=weight_quant, membrane_quant="int4", **{**FAST, **config})
    return model, apply(model, cfg, ctx)


# -- the schemes' grid methods ------------------------------------------------------------------------

GRID_SCHEMES = st.one_of(
    st.builds(PotScheme, bits=st.integers(2, 8), log_rounding=st.booleans()),
    st.builds(ApotScheme, bits=st.integers(3, 8)),
    st.builds(IntScheme, bits=st.integers(2, 12), per_channel=st.booleans(),
              rounding=st.sampled_from(["nearest", "truncate", "stochastic"])),
    st.builds(TernaryScheme, rule=st.sampled_from(["max", "twn"])),
    st.builds(FixedPointScheme, integer_bits=st.integers(0, 4), fractional_bits=st.integers(1, 8)),
)


@settings(max_examples=120, deadline=None)
@given(scheme=GRID_SCHEMES, seed=st.integers(0, 2**16), magnitude=st.sampled_from([1e-3, 0.1, 1.0, 30.0]))
def test_grid_methods_agree_with_encode(scheme, seed, magnitude):
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(seed)) * magnitude
    w[0, 0] = 0.0
    enc = scheme.encode(w)
    params = scheme.grid_params(w)
    assert params.keys() == enc.params.keys()
    assert all(torch.equal(params[k], enc.params[k]) for k in params)
    # the encode / decode round trip keeps the codes, also after from_dict
    assert torch.equal(scheme.encode_values(scheme.decode(enc), enc.params).codes, enc.codes)
    lower, upper = scheme.grid_neighbours(w, params)
    assert bool((lower <= upper).all())
    for values in (lower, upper):
        again = scheme.encode_values(values, params)
        assert torch.equal(scheme.decode(again), values)
        assert 0 <= int(again.codes.min()) and int(again.codes.max()) < 2**scheme.code_bits
    # the scheme's own rounding is one of the two neighbours; inside the range they bracket w
    quantized = scheme.decode(enc)
    assert bool(((quantized == lower) | (quantized == upper)).all())
    inside = (lower < upper)
    assert bool((lower[inside] <= w[inside]).all()) and bool((w[inside] <= upper[inside]).all())


def test_encode_values_refuses_values_off_the_grid():
    scheme = PotScheme(bits=4)
    params = scheme.grid_params(torch.tensor([1.0]))
    with pytest.raises(InputError, match="not levels of the grid"):
        scheme.encode_values(torch.tensor([0.3, 0.5]), params)
    assert scheme.encode_values(torch.tensor([0.25, -0.5, 0.0]), params).codes.tolist() == [3, 10, 0]


def test_every_quantizing_scheme_supports_adaround():
    assert all(supports_adaround(parse_weight_scheme(s)) for s in SCHEMES + ["pot8", "apot8", "int8"])
    assert not supports_adaround(parse_weight_scheme("fp32"))


# -- the pieces ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("module, shape", [
    (nn.Conv2d(4, 6, 3, padding=1), (5, 4, 7, 6)),
    (nn.Conv2d(4, 6, (3, 2), stride=2, dilation=(1, 2), groups=2), (5, 4, 9, 8)),
    (nn.Conv2d(4, 8, 3, padding="same", padding_mode="reflect", groups=4), (3, 4, 6, 6)),
    (nn.Conv1d(3, 6, 3, padding=2, stride=2, groups=3), (5, 3, 11)),
    (nn.Conv1d(3, 6, 4, padding="same", padding_mode="circular"), (3, 11)),  # unbatched
    (nn.Linear(5, 3), (4, 2, 5)),
])
def test_input_rows_reproduce_the_layer(module, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        module.bias.zero_()
        expected = module(x)
        if isinstance(module, nn.Linear):
            expected = expected.reshape(-1, module.out_features)
        else:  # [N, C_out, *spatial] -> one row per output position
            expected = expected if expected.dim() == module.weight.dim() else expected.unsqueeze(0)
            expected = expected.flatten(2).transpose(1, 2).reshape(-1, module.out_channels)
        ours = torch.einsum("ngi,goi->ngo", input_rows(module, x), weight_matrix(module, module.weight))
    torch.testing.assert_close(ours.reshape(expected.shape), expected, atol=1e-5, rtol=1e-5)


def test_flip_descent_never_raises_the_error_and_ends_in_a_one_flip_optimum():
    gen = torch.Generator().manual_seed(3)
    module = nn.Linear(6, 5, bias=False)
    x = (torch.rand(200, 6, generator=gen) < 0.3).double()
    gram = (x.T @ x).unsqueeze(0)
    weight = torch.randn(5, 6, generator=gen)
    objective = _Objective(module, weight, InputMoments(gram, gram, gram, rows=200))
    lower, upper = torch.floor(weight * 4) / 4, torch.ceil(weight * 4) / 4
    start = torch.where(torch.rand(5, 6, generator=gen) < 0.5, lower, upper).double().unsqueeze(0)
    low, up = lower.double().unsqueeze(0), upper.double().unsqueeze(0)
    result = flip_descent(start, low, up, objective)
    assert float(objective(result)) <= float(objective(start))
    assert bool(((result == low) | (result == up)).all())
    for o, i in itertools.product(range(5), range(6)):
        flipped = result.clone()
        flipped[0, o, i] = up[0, o, i] if result[0, o, i] == low[0, o, i] else low[0, o, i]
        assert float(objective(flipped)) >= float(objective(result)) - 1e-9


# -- the pass -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_quant", SCHEMES)
@pytest.mark.parametrize("name", MODELS)
def test_adaptive_rounding_is_on_the_grid_and_not_worse(name, weight_quant):
    model, result = quantize(name, weight_quant)
    state = get_state(model)
    calibration = result.metrics["calibration"]
    assert calibration["method"] == "adaround" and calibration["data"] == "train"
    layers = dict(synaptic_layers(model))
    assert set(calibration["layers"]) == set(layers)
    for layer, report in calibration["layers"].items():
        enc = state.tensors[f"{layer}.weight"]
        scheme = parse_weight_scheme(weight_quant)
        assert enc.codes.dtype == torch.uint8 and int(enc.codes.max()) < 2**enc.bits
        decoded = scheme.decode(enc)
        assert torch.equal(decoded.reshape(layers[layer].weight.shape), layers[layer].weight.detach())
        assert torch.equal(scheme.encode_values(decoded, enc.params).codes, enc.codes)
        assert report["error_after"] <= report["error_before"] + 1e-12
        assert report["used"] in ("adaround", "default")


@pytest.mark.parametrize("weight_quant", ["pot4", "ternary"])
def test_calibrated_model_saves_and_loads_back_bit_exact(tmp_path, weight_quant):
    model, _ = quantize("conv2d_net", weight_quant)
    loaded = load_compressed(save_compressed(model, tmp_path / "q.safetensors"))
    for name, module in synaptic_layers(model):
        assert torch.equal(loaded.get_submodule(name).weight, module.weight)


def _first_layer_error(name: str, weight: torch.Tensor) -> float:
    """``sum ||W x - Q x||^2`` of the first layer on the calibration inputs (its input is the data)."""
    model = load_model(TINY_MODELS[name].ref)
    first = synaptic_layers(model)[0][1]
    x = bundle(name, seed=1).dataset.tensors[0]
    if TINY_MODELS[name].is_sequence:
        x = x.reshape(-1, *x.shape[2:])
    with torch.no_grad():
        w = first.weight
        return float(((nn.functional.linear(x, w) - nn.functional.linear(x, weight)) ** 2).sum())


@pytest.mark.parametrize("weight_quant", SCHEMES)
@pytest.mark.parametrize("name", ["leaky_mlp", "tutorial_sequence_net"])
def test_first_layer_output_error_is_at_most_the_default_roundings(name, weight_quant):
    default, _ = quantize(name, weight_quant, calibration="none")
    calibrated, result = quantize(name, weight_quant)
    first = synaptic_layers(calibrated)[0][0]
    ours = _first_layer_error(name, calibrated.get_submodule(first).weight.detach())
    theirs = _first_layer_error(name, default.get_submodule(first).weight.detach())
    assert ours <= theirs * (1 + 1e-6)
    report = result.metrics["calibration"]["layers"][first]
    model = load_model(TINY_MODELS[name].ref)
    energy = _first_layer_error(name, torch.zeros_like(model.get_submodule(first).weight))
    assert report["error_before"] == pytest.approx(theirs / energy, rel=1e-4, abs=1e-9)
    assert report["error_after"] == pytest.approx(ours / energy, rel=1e-4, abs=1e-9)


def test_pot4_adaptive_rounding_lowers_the_error_of_every_layer_of_a_conv_net():
    _, result = quantize("conv2d_net", "pot4", calibration_iters=100)
    for report in result.metrics["calibration"]["layers"].values():
        assert report["used"] == "adaround" and report["error_after"] < report["error_before"]


def test_same_seed_same_codes():
    def codes(seed):
        model, _ = quantize("conv1d_net", "pot4", seed=seed, calibration_samples=8)
        return {k: v.codes for k, v in get_state(model).tensors.items()}

    first, second = codes(0), codes(0)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_none_keeps_the_schemes_own_codes():
    model = load_model(TINY_MODELS["conv2d_net"].ref)
    from snncompress.models.fold import fold_batchnorm

    fold_batchnorm(model)  # the pass folds Conv + BatchNorm first; its codes encode the folded weights
    original = {n: m.weight.detach().clone() for n, m in synaptic_layers(model)}
    result = apply(model, QuantizeConfig(weight_quant="pot4", membrane_quant="int4", calibration="none"),
                   PassContext(data=bundle("conv2d_net"), train_data=bundle("conv2d_net", seed=1)))
    assert result.metrics["calibration"] == {"method": "none"}
    for name, w in original.items():
        assert torch.equal(get_state(model).tensors[f"{name}.weight"].codes, PotScheme(bits=4).encode(w).codes)


def test_qat_ignores_calibration_with_a_note_when_asked_for():
    def qat(**extra):
        cfg = QuantizeConfig(mode="qat", weight_quant="pot4", membrane_quant="int4", epochs=1, **extra)
        return apply(load_model(TINY_MODELS["leaky_mlp"].ref), cfg,
                     PassContext(data=bundle("leaky_mlp"), train_data=bundle("leaky_mlp", seed=1)))

    asked = qat(calibration="adaround")
    assert "calibration" not in asked.metrics
    assert any("QAT learns the weights" in n for n in asked.notes)
    default = qat()
    assert "calibration" not in default.metrics
    assert not any("calibration" in n for n in default.notes)  # the default value is not worth a note


def test_calibration_data_is_the_training_data_else_the_evaluation_data_with_a_note():
    _, with_train = quantize("leaky_mlp", "pot4")
    assert with_train.metrics["calibration"]["data"] == "train"
    assert any("16 train samples" in n for n in with_train.notes)
    _, without = quantize("leaky_mlp", "pot4", train=False)
    assert without.metrics["calibration"]["data"] == "evaluation"
    assert any("evaluation data" in n and "--train-data" in n for n in without.notes)


def test_stochastic_rounding_is_kept_and_overrides_switch_calibration_per_layer():
    model, result = quantize("leaky_mlp", "int4", rounding="stochastic")
    assert result.metrics["calibration"] == {"method": "none"}
    assert any("stochastic rounding was asked for" in n for n in result.notes)
    _, mixed = quantize("leaky_mlp", "pot4", overrides=[{"targets": ["2"], "calibration": "none"}])
    assert set(mixed.metrics["calibration"]["layers"]) == {"0"}


def test_pruned_weights_stay_zero():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    mask = torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    with torch.no_grad():
        model[0].weight.mul_(mask)
    get_state(model).masks["0.weight"] = mask
    apply(model, QuantizeConfig(weight_quant="pot4", membrane_quant="int4", **FAST),
          PassContext(data=bundle("leaky_mlp"), train_data=bundle("leaky_mlp", seed=1)))
    assert bool((model[0].weight[~mask] == 0).all())


def test_asymmetric_reconstruction_runs_against_an_fp32_reference():
    model = load_model(TINY_MODELS["conv2d_net"].ref)
    reference = copy_model(model)
    layers = [(n, m, parse_weight_scheme("pot4")) for n, m in synaptic_layers(model)]
    result = adaround(model, layers, bundle("conv2d_net"), AdaRoundSettings(iters=20), reference=reference)
    assert [r.layer for r in result.layers] == [n for n, _, _ in layers]
    assert all(r.error_after <= r.error_before for r in result.layers)
    assert not torch.equal(model[0].weight, reference[0].weight)  # the reference keeps its fp32 weights


def test_demo_pot4_accuracy_with_adaround_is_at_least_without():
    opts = DataOptions(time_steps=8, batch_size=128)
    test, train = load_data("digits:test", opts), load_data("digits:train", opts)
    accuracy = {}
    for calibration in ("none", "adaround"):
        model = load_model("demo")
        cfg = {"weight_quant": "pot4", "membrane_quant": "int4", "calibration": calibration}
        report = run_single_pass("quantize", model, cfg, PassContext(data=test, train_data=train),
                                 RunOptions(hardware=False))
        accuracy[calibration] = report.after["accuracy"]
    assert accuracy["adaround"] >= accuracy["none"]
