"""Bad descriptions raise InputError naming the layer and the field."""

from __future__ import annotations

import pytest
from hw_models import leaky, linear

from snncompress.errors import InputError
from snncompress.hardware import ModelDescription, NeuronLayer
from snncompress.hardware.formats import parse_scheme


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_scheme": "pot4", "weight_bits": 8}, "scheme 'pot4' is 4 bits but 8 bits are stored"),
        ({"weight_scheme": "posit8", "weight_bits": 8}, "unknown scheme 'posit8'"),
        ({"nonzero_weights": 13}, r"nonzero_weights must be in \[0, 12\]"),
        ({"spatial_sparsity": 1.5}, r"spatial_sparsity must be in \[0, 1\]"),
        ({"dense_ops_per_step": 13}, "must be output elements \\* fan_in"),
        ({"kind": "conv3d"}, "unknown kind"),
        ({"input_spikes_per_sample": -1.0}, "input_spikes_per_sample must be >= 0"),
        ({"input_is_spikes": False, "input_scheme": "fp"}, "cannot tell the width"),
    ],
)
def test_bad_synaptic_layer(kwargs, message):
    with pytest.raises(InputError, match=message) as info:
        linear(**kwargs)
    assert "layer fc1" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"neuron_type": "Synaptic"}, "needs alpha"),
        ({"neuron_type": "Izhikevich"}, "state_variables not given"),
        ({"beta": (0.5, 0.5)}, "beta needs 1 or 3 values"),
        ({"beta": 1.5}, r"beta values must be in \[0, 1\]"),
        ({"membrane_scheme": "ternary", "membrane_bits": 0}, "bits must be a positive integer"),
    ],
)
def test_bad_neuron_layer(kwargs, message):
    with pytest.raises(InputError, match=message):
        leaky(**kwargs)


def test_model_checks():
    with pytest.raises(InputError, match="duplicate layer names: fc1"):
        ModelDescription("m", 4, (linear(), linear()))
    with pytest.raises(InputError, match="has time_steps 2, model has 4"):
        ModelDescription("m", 4, (linear(), NeuronLayer("lif", "Leaky", 3, 2, beta=0.5)))
    with pytest.raises(InputError, match="has no layers"):
        ModelDescription("m", 4, ())


@pytest.mark.parametrize(
    ("label", "bits", "family", "shifts"),
    [
        ("fp32", 32, "fp", 0),
        ("bf16", 16, "fp", 0),
        ("int8", 8, "int", 0),
        ("pot4", 4, "int", 1),
        ("apot4", 4, "int", 2),
        ("ternary", 2, "int", 1),
        ("binary", 1, "int", 1),
        ("fixed3.5", 9, "int", 0),  # 1 sign + 3 integer + 5 fractional bits
    ],
)
def test_schemes(label, bits, family, shifts):
    fmt = parse_scheme(label, bits, "test")
    assert (fmt.family, fmt.bits, fmt.shifts_per_mult) == (family, bits, shifts)


def test_fixed_point_width_checked():
    with pytest.raises(InputError, match="is 9 bits but 6 bits are stored"):
        parse_scheme("fixed3.5", 6, "test")
