"""The integer-only reference (issue 17): it matches the torch model spike for spike, and says so when not.

* every weight scheme x ternary / int4 membrane x Leaky / Synaptic / RLeaky (and the conv nets, whose
  BatchNorm the quantize pass folds): 0 mismatching spikes;
* a program whose codes were altered (in memory, or in a bundle's binary) gives mismatches, a count per
  layer and step and the first location;
* what the reference cannot run (an fp32 membrane, an unfolded BatchNorm, a 3x3 average, a model with its
  own time loop) is refused naming the layer and why;
* a hypothesis property: one neuron layer on random integer inputs with short fixed-point parameters,
  reference step == torch step;
* the integer rounding helpers against Python's exact integers.
"""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from snncompress.data.loading import DataBundle, DataOptions
from snncompress.errors import UnsupportedLayerError
from snncompress.fileformat.compressed import save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.integer.execute import div_round_half_even, mul_shift_round, run_program
from snncompress.integer.program import compile_program
from snncompress.integer.verify import verify
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.passes.base import PassContext
from snncompress.passes.quantize import QuantizeConfig
from snncompress.passes.quantize import apply as quantize
from snncompress.quant.membrane import MembraneQuantizer
from snncompress.sim.runner import SNNRunner
from snncompress.state import get_state
from tests.models import CLASSES, TINY_MODELS

SCHEMES = ["pot4", "apot4", "int8", "int4", "ternary", "fixed3.5"]
MEMBRANES = ["ternary", "int4"]
MODELS = ["leaky_mlp", "synaptic_mlp", "rleaky_mlp", "subtract_reset_mlp", "zero_reset_mlp", "conv2d_net",
          "conv1d_net"]


def _data(name: str, n: int = 8, time_steps: int = 3) -> DataBundle:
    """Inputs on a 2^-4 grid (like the digits, k / 16): fixed-point numbers the reference reads exactly."""
    x = torch.round(TINY_MODELS[name].example_inputs(n, seed=1) * 16) / 16
    return DataBundle("tiny", TensorDataset(x, torch.arange(n) % CLASSES), False, time_steps, CLASSES,
                      DataOptions(time_steps=time_steps, batch_size=4))


def _quantized(name: str, weight: str = "pot4", membrane: str = "ternary") -> tuple[nn.Module, DataBundle]:
    model, data = TINY_MODELS[name].build(), _data(name)
    config = QuantizeConfig(weight_quant=weight, membrane_quant=membrane, calibration="none")
    quantize(model, config, PassContext(data=data))
    return model, data


@pytest.mark.parametrize("membrane", MEMBRANES)
@pytest.mark.parametrize("weight", SCHEMES)
@pytest.mark.parametrize("name", MODELS)
def test_reference_matches_torch_spike_for_spike(name, weight, membrane):
    model, data = _quantized(name, weight, membrane)
    result = verify(model, data)
    assert result.bit_exact, str(result.first)
    assert result.total_compared == sum(
        8 * 3 * int(np.prod(s)) for s in _neuron_shapes(model, data)), "every neuron, step and sample compared"
    assert sum(result.spikes.values()) > 0  # the comparison is not between silent models
    assert result.predictions_agree == result.samples


def _neuron_shapes(model, data):
    shapes = []

    class Probe:
        def on_step(self, layer, module, step, spikes, membrane):
            if step == 0:
                shapes.append(tuple(spikes.shape[1:]))

    runner = SNNRunner(model)
    with torch.no_grad(), runner.observe(Probe()):
        runner.run(data.dataset.tensors[0][:1], is_sequence=False, time_steps=1)
    return shapes


def test_float32_certificate_of_float_biases_and_scales():
    """A float bias or a 24-bit int scale needs more than float32's 24 significant bits: not certified."""
    model, data = _quantized("leaky_mlp", "int8", "ternary")
    layers = verify(model, data).layers
    assert [r["float32_exact"] for r in layers if "float32_exact" in r] == [False] * 4
    assert all(r["float32_bits"] > 24 for r in layers if "float32_exact" in r)


def test_saved_file_verifies(tmp_path):
    model, data = _quantized("conv2d_net", "int8", "int4")
    path = save_compressed(model, tmp_path / "q.safetensors")
    assert verify(load_model(str(path)), data).bit_exact


def test_altered_codes_are_found_with_count_and_first_location():
    model, data = _quantized("leaky_mlp", "int8", "ternary")
    enc = get_state(model).tensors["0.weight"]
    codes = enc.codes.clone()
    codes[:, :] = 255 - codes  # the reference reads these; the torch model keeps its decoded weights
    get_state(model).tensors["0.weight"] = type(enc)(codes=codes, bits=enc.bits, params=enc.params,
                                                     scheme=enc.scheme)
    result = verify(model, data)
    assert not result.bit_exact
    assert result.total_mismatches == sum(sum(v) for v in result.mismatches.values()) > 0
    assert result.first is not None and result.first.layer in ("1", "3")
    assert result.first.torch_spike != result.first.reference_spike
    assert "sample" in str(result.first) and "step" in str(result.first)


@pytest.mark.parametrize("case, message", [
    ("fp32_membrane", "layer '1' (Leaky) keeps an fp32 membrane"),
    ("batchnorm", "layer '2' (BatchNorm1d) is a float normalisation"),
    ("avgpool3", "divides by 9, which has no exact fixed-point form"),
    ("sequence", "needs an nn.Sequential"),
])
def test_what_cannot_run_integer_only_is_refused_with_the_layer(case, message):
    if case == "sequence":
        model, data = TINY_MODELS["tutorial_net"].build(), _data("tutorial_net")
    elif case == "fp32_membrane":
        model, data = TINY_MODELS["leaky_mlp"].build(), _data("leaky_mlp")
        quantize(model, QuantizeConfig(membrane_quant="fp32", calibration="none"), PassContext(data=data))
    else:
        if case == "batchnorm":  # a BatchNorm after a neuron has no layer to fold into
            model = nn.Sequential(nn.Linear(8, 12), snn.Leaky(beta=0.5, init_hidden=True), nn.BatchNorm1d(12),
                                  nn.Linear(12, CLASSES), snn.Leaky(beta=0.5, init_hidden=True, output=True))
            data = _data("leaky_mlp")
        else:
            model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), snn.Leaky(beta=0.5, init_hidden=True),
                                  nn.AvgPool2d(3, stride=1), nn.Flatten(), nn.Linear(72, CLASSES),
                                  snn.Leaky(beta=0.5, init_hidden=True, output=True))
            data = _data("conv2d_net")
        model.eval()
        quantize(model, QuantizeConfig(calibration="none"), PassContext(data=data))
    with pytest.raises(UnsupportedLayerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify(model, data)


def test_inputs_must_be_fixed_point():
    model, data = _quantized("leaky_mlp")
    x = data.dataset.tensors[0] + 1e-9  # no short fixed-point form
    bad = DataBundle("bad", TensorDataset(x, data.dataset.tensors[1]), False, 3, CLASSES, data.options)
    with pytest.raises(UnsupportedLayerError, match="not fixed-point numbers"):
        verify(model, bad)


# -- property: one neuron layer, random integer inputs ------------------------------------------------------

NEURONS = ["Leaky", "Synaptic", "RLeaky"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(NEURONS),
    mechanism=st.sampled_from(["subtract", "zero"]),
    beta=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]),
    threshold=st.sampled_from([0.5, 1.0, 1.25, 2.0]),
    levels=st.sampled_from([(-1, 1), (-8, 7), (-3, 1)]),
    grid=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**16),
)
def test_property_reference_step_equals_torch_step(kind, mechanism, beta, threshold, levels, grid, seed):
    """Short fixed-point weights, biases and neuron parameters and integer inputs keep torch's float32 exact,
    so its spikes and the reference's must be identical at every step."""
    gen = torch.Generator().manual_seed(seed)
    n_in, n = 5, 6
    common = dict(beta=beta, threshold=threshold, reset_mechanism=mechanism, init_hidden=True, output=True)
    if kind == "Leaky":
        neuron = snn.Leaky(**common)
    elif kind == "Synaptic":
        neuron = snn.Synaptic(alpha=0.5, **common)
    else:
        neuron = snn.RLeaky(linear_features=n, **common)
    model = nn.Sequential(nn.Linear(n_in, n), neuron).eval()
    with torch.no_grad():  # weights and biases k / 8: exact in float32 at any order of summation
        model[0].weight.copy_(torch.randint(-8, 9, (n, n_in), generator=gen) / 8)
        model[0].bias.copy_(torch.randint(-4, 5, (n,), generator=gen) / 8)
        if kind == "RLeaky":
            model[1].recurrent.weight.copy_(torch.randint(-4, 5, (n, n), generator=gen) / 4)
            model[1].recurrent.bias.copy_(torch.randint(-2, 3, (n,), generator=gen) / 4)
    low, high = levels
    install_membrane_quantizer(model, "1", MembraneQuantizer(levels_low=low, levels_high=high), grid)
    x = torch.randint(-3, 4, (6, 4, n_in), generator=gen).float()  # 6 samples, 4 steps, integers
    runner = SNNRunner(model)
    with torch.no_grad():
        ours = runner.run(x, is_sequence=True, time_steps=4).spikes.numpy().astype(np.uint8)
    program = compile_program(model, 0, 3, 4)
    theirs = run_program(program, x.numpy().astype(np.int64), is_sequence=True, time_steps=4)["1"]
    np.testing.assert_array_equal(ours, theirs)
    # the float32 certificate: short values fit 24 bits; v / unit is exact only for a power-of-two unit, and the
    # subtract reset Vth / beta is short only for beta = 0 or a power of two (0.75: a 24-bit 2/3)
    unit = threshold / grid
    short_reset = mechanism == "zero" or beta != 0.75
    assert program.ops[0].float32_bits <= 24
    assert (program.ops[1].float32_bits <= 24) == (unit == 2.0 ** round(np.log2(unit)) and short_reset)


@settings(max_examples=200, deadline=None)
@given(v=st.integers(-(2**62) + 1, 2**62 - 1), d=st.integers(1, 2**40))
def test_div_round_half_even_is_exact(v, d):
    got = int(div_round_half_even(np.array([v], dtype=np.int64), np.array([d], dtype=np.int64))[0])
    q, r = divmod(v, d)
    want = q + (1 if 2 * r > d or (2 * r == d and q % 2) else 0)
    assert got == want


@settings(max_examples=200, deadline=None)
@given(v=st.integers(-(2**62) + 1, 2**62 - 1), shift=st.integers(0, 40), data=st.data())
def test_mul_shift_round_is_exact(v, shift, data):
    m = data.draw(st.integers(0, 2**shift))
    got = int(mul_shift_round(np.array([v], dtype=np.int64), np.array(m, dtype=np.int64), shift)[0])
    q, r = divmod(v * m, 1 << shift)
    want = q + (1 if 2 * r > (1 << shift) or (2 * r == (1 << shift) and q % 2) else 0)
    assert got == want


# -- quantize --integer-only: torch's float32 path made exact by construction -------------------------------

@pytest.mark.parametrize("weight", ["pot4", "apot4", "int8", "ternary", "fixed3.5"])
@pytest.mark.parametrize("name", ["zero_reset_mlp", "rleaky_mlp", "conv2d_net"])
def test_integer_only_certifies_every_layer_and_verifies(name, weight):
    model, data = TINY_MODELS[name].build(), _data(name)
    config = QuantizeConfig(weight_quant=weight, membrane_quant="int4", calibration="none", integer_only=True)
    result = quantize(model, config, PassContext(data=data))
    bits = result.metrics["integer_only"]["float32_bits"]
    assert bits and all(b <= 24 for b in bits.values())
    check = verify(model, data)
    assert check.bit_exact and all(r["float32_exact"] for r in check.layers if "float32_exact" in r)
    for layer, changes in result.metrics["integer_only"]["changed"].items():
        assert model.get_submodule(layer) is not None and changes


@pytest.mark.parametrize("name, message", [
    ("subtract_reset_mlp", "resets by subtraction with beta"),
    ("synaptic_mlp", "(Synaptic) has alpha"),
])
def test_integer_only_refuses_what_float32_cannot_hold(name, message):
    from snncompress.errors import ConfigError

    model, data = TINY_MODELS[name].build(), _data(name)
    config = QuantizeConfig(weight_quant="pot4", calibration="none", integer_only=True)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        quantize(model, config, PassContext(data=data))
