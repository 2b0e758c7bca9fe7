"""CLI spec parsing and the fixed-point helpers."""

from __future__ import annotations

import pytest
import torch

from snncompress.errors import ConfigError
from snncompress.quant import (
    ApotScheme,
    FixedPointScheme,
    Fp32Scheme,
    IntScheme,
    PotScheme,
    TernaryScheme,
    integer_bits_for_range,
    parse_fixed_format,
    parse_weight_scheme,
    quantize_fixed,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pot4", PotScheme(bits=4)),
        ("pot8", PotScheme(bits=8)),
        ("apot4", ApotScheme(bits=4)),
        ("int8", IntScheme(bits=8)),
        (" INT4 ", IntScheme(bits=4)),
        ("ternary", TernaryScheme()),
        ("fixed3.5", FixedPointScheme(integer_bits=3, fractional_bits=5)),
        ("fixed0.7", FixedPointScheme(integer_bits=0, fractional_bits=7)),
        ("fp32", Fp32Scheme()),
    ],
)
def test_valid_specs(text, expected):
    scheme = parse_weight_scheme(text)
    assert scheme == expected
    assert scheme.describe() == text.strip().lower()


def test_rounding_applies_to_int_and_fixed():
    assert parse_weight_scheme("int8", rounding="stochastic").rounding == "stochastic"
    assert parse_weight_scheme("fixed3.5", rounding="truncate").describe() == "fixed3.5-trunc"
    with pytest.raises(ConfigError, match="applies only to int and fixed"):
        parse_weight_scheme("pot4", rounding="stochastic")
    with pytest.raises(ConfigError, match="unknown rounding"):
        parse_weight_scheme("int8", rounding="up")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pot1", "pot weights take 2 to 8 bits, not 1"),
        ("pot0", "pot weights take 2 to 8 bits, not 0"),
        ("int0", "int weights take 2 to 16 bits, not 0"),
        ("int1", "int weights take 2 to 16 bits, not 1"),
        ("apot2", "apot weights take 3 to 8 bits"),
        ("fixed3", "needs integer and fractional bits"),
        ("fixed-1.4", "must be >= 0"),
        ("fixed12.12", "25 bits"),
        ("foo4", "unknown weight scheme 'foo4'"),
    ],
)
def test_bad_specs_name_the_problem_and_the_valid_forms(text, problem):
    with pytest.raises(ConfigError) as info:
        parse_weight_scheme(text)
    message = str(info.value)
    assert problem in message
    assert "pot2..pot8" in message and "fixed<m>.<n>" in message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "suggestion"), [("foo4", "pot4"), ("ternery", "ternary"), ("fp16", "fp32")])
def test_did_you_mean(text, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'"):
        parse_weight_scheme(text)


def test_no_suggestion_for_nonsense():
    with pytest.raises(ConfigError) as info:
        parse_weight_scheme("xyz")
    assert "did you mean" not in str(info.value)


def test_parse_fixed_format():
    assert parse_fixed_format("fixed3.5") == (3, 5)
    assert parse_fixed_format("Q1.14") == (1, 14)
    for bad in ("fixed3", "3.5", "fixed-1.4", "fixed30.30"):
        with pytest.raises(ConfigError):
            parse_fixed_format(bad)


def test_quantize_fixed_for_neuron_parameters():
    # beta = 0.95 in Q0.4: 15.2 steps of 1/16 -> 15/16; threshold 1.0 in Q0.4 saturates to 15/16
    assert quantize_fixed(0.95, 0, 4).item() == 15 / 16
    assert quantize_fixed(torch.tensor([1.0, -1.0]), 0, 4).tolist() == [15 / 16, -1.0]
    assert quantize_fixed(torch.tensor([0.95]), 0, 4, rounding="truncate").item() == 15 / 16
    assert quantize_fixed(torch.tensor([0.97]), 0, 4, rounding="truncate").item() == 15 / 16
    draws = quantize_fixed(torch.full((20000,), 0.95), 1, 4, rounding="stochastic")
    assert abs(float(draws.mean()) - 0.95) < 0.005
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x = torch.full((100,), 0.3)
    assert torch.equal(quantize_fixed(x, 1, 2, "stochastic", g1), quantize_fixed(x, 1, 2, "stochastic", g2))


def test_integer_bits_for_range():
    assert integer_bits_for_range(0.9, fractional_bits=4) == 0  # 0.9 <= 1 - 1/16
    assert integer_bits_for_range(1.0, fractional_bits=4) == 1
    assert integer_bits_for_range(5.0, fractional_bits=0) == 3
    with pytest.raises(ConfigError):
        integer_bits_for_range(-1.0)
