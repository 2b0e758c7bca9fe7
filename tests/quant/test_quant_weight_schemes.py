"""Each weight scheme against its definition (METHODS.md: PoT, APoT, int, ternary, fixed point)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from snncompress.errors import ConfigError, FileFormatError, InputError
from snncompress.quant import (
    ApotScheme,
    EncodedTensor,
    FixedPointScheme,
    Fp32Scheme,
    IntScheme,
    PotScheme,
    TernaryScheme,
    WeightScheme,
)
from snncompress.quant.apot import apot_levels


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# --- power of two -----------------------------------------------------------------------------


def test_pot4_rounds_to_nearest_level_with_ties_away_from_zero():
    w = t([1.0, 0.9, 0.74, 0.75, 0.76, 0.5, 0.3, 0.0, -0.2, 0.01, 2.0**-7, 0.0078, -0.6])
    expected = t([1, 1, 0.5, 1, 1, 0.5, 0.25, 0, -0.25, 2.0**-6, 2.0**-6, 0, -0.5])
    assert torch.equal(PotScheme(bits=4).quantize(w), expected)


def test_pot4_log_rounding_uses_the_geometric_midpoint():
    # log2(0.72) = -0.47 -> 2**0; log2(0.70) = -0.51 -> 2**-1 (nearest-level rounding gives 0.5 for both)
    w = t([1.0, 0.72, 0.70, 2.0**-6.4, 2.0**-6.6])
    assert torch.equal(PotScheme(bits=4, log_rounding=True).quantize(w), t([1, 1, 0.5, 2.0**-6, 0]))
    assert torch.equal(PotScheme(bits=4).quantize(w)[1:3], t([0.5, 0.5]))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pot_level_set_is_zero_and_signed_powers_of_two(bits):
    j_max = 2 ** (bits - 1) - 2
    grid = [0.0] + [s * 2.0**-j for j in range(j_max + 1) for s in (1, -1)]
    w = torch.cat([t(grid), torch.linspace(-1, 1, 4001)])
    values = set(PotScheme(bits=bits).quantize(w).tolist())
    assert values <= set(grid)
    assert set(PotScheme(bits=bits).quantize(t(grid)).tolist()) == set(grid)


def test_pot_code_layout_sign_bit_and_exponent_index():
    enc = PotScheme(bits=4).encode(t([1.0, -1.0, 0.5, -0.25, 0.0, 2.0**-6]))
    # code = sign << 3 | e, value = +-2**-(e-1), e = 0 is zero
    assert enc.codes.tolist() == [1, 9, 2, 8 | 3, 0, 7]
    assert enc.codes.dtype == torch.uint8 and enc.bits == 4


def test_pot_alpha_is_power_of_two_of_rounded_log_max():
    enc = PotScheme(bits=4).encode(t([0.3, -0.1]))  # log2(0.3) = -1.74 -> -2
    assert enc.params["exponent"].item() == -2
    enc = PotScheme(bits=4).encode(t([0.36, -0.1]))  # log2(0.36) = -1.47 -> -1
    assert enc.params["exponent"].item() == -1
    # max|w| = 1.4 -> alpha = 1: saturates to 1; the STE passes no gradient there
    w = t([1.4, 0.5, -1.2]).requires_grad_()
    out = PotScheme(bits=4).fake_quant(w)
    assert out.tolist() == [1.0, 0.5, -1.0]
    out.sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 0.0]


def test_pot_all_zero_tensor():
    assert torch.equal(PotScheme(bits=4).quantize(torch.zeros(3)), torch.zeros(3))


# --- additive power of two --------------------------------------------------------------------


def test_apot_level_tables():
    assert apot_levels(3).tolist() == [-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]
    assert apot_levels(4).tolist()[7:] == [0.0, 1 / 16, 1 / 4, 1 / 2, 9 / 16, 3 / 4, 1.0, 1.5]
    for bits in range(3, 8):
        assert len(apot_levels(bits)) == 2**bits - 1
    assert len(apot_levels(8)) < 2**8 - 1  # float32 merges a few sums at 8 bits


@pytest.mark.parametrize("bits", range(3, 9))
def test_apot_levels_are_sums_of_two_powers_of_two(bits):
    for level in apot_levels(bits).tolist():
        scaled = Fraction(abs(level)) * 2**40
        assert scaled.denominator == 1 and bin(scaled.numerator).count("1") <= 2, level


def test_apot_rounds_to_nearest_level_of_the_table():
    torch.manual_seed(0)
    w = torch.randn(500)
    scheme = ApotScheme(bits=4)
    enc = scheme.encode(w)
    alpha = 2.0 ** enc.params["exponent"].item()
    levels = apot_levels(4) * alpha
    clipped = w.clamp(-1.5 * alpha, 1.5 * alpha)
    nearest = levels[(clipped[:, None] - levels[None, :]).abs().argmin(dim=1)]
    assert torch.equal(scheme.quantize(w), nearest)
    assert enc.codes.tolist() == (levels[None, :] == nearest[:, None]).int().argmax(dim=1).tolist()


# --- uniform integers -------------------------------------------------------------------------


def test_int_per_channel_scales_and_offset_codes():
    w = t([[0.5, -0.3, 0.1], [-2.0, 1.1, 0.0]])
    enc = IntScheme(bits=4).encode(w)
    assert enc.params["scale"].shape == (2, 1)
    assert torch.allclose(enc.params["scale"].flatten(), t([0.5 / 7, 2.0 / 7]))
    # q = round(w / scale): row 0 [7, -4.2 -> -4, 1.4 -> 1], row 1 [-7, 3.85 -> 4, 0]
    assert (enc.codes.int() - 8).tolist() == [[7, -4, 1], [-7, 4, 0]]
    assert int(enc.codes.min()) >= 1 and int(enc.codes.max()) <= 15


def test_int_per_tensor_and_one_dim_tensors_use_one_scale():
    w = t([[0.5, -0.25], [-2.0, 1.0]])
    assert IntScheme(bits=8, per_channel=False).encode(w).params["scale"].shape == ()
    assert IntScheme(bits=8).encode(t([0.5, -1.0])).params["scale"].shape == ()


def test_int_error_is_at_most_half_a_step_and_int16_codes_are_int32():
    torch.manual_seed(1)
    w = torch.randn(8, 16)
    for bits in (2, 4, 8, 16):
        enc = IntScheme(bits=bits).encode(w)
        q = IntScheme(bits=bits).decode(enc)
        assert ((q - w).abs() <= enc.params["scale"] / 2 * (1 + 1e-5)).all()
        assert enc.codes.dtype == (torch.uint8 if bits <= 8 else torch.int32)


def test_int_truncate_floors_and_stochastic_is_unbiased_and_seeded():
    w = torch.full((1, 20000), 0.3)
    w[0, 0] = 1.0  # scale = 1/7: 0.3 * 7 = 2.1
    trunc = IntScheme(bits=4, rounding="truncate").quantize(w)
    assert torch.allclose(trunc[0, 1:], torch.full((19999,), 2 / 7))
    stoch = IntScheme(bits=4, rounding="stochastic", seed=3)
    q = stoch.quantize(w)
    levels = set((q[0, 1:] * 7).round().tolist())
    assert levels == {2.0, 3.0}
    assert abs(float((q[0, 1:] * 7).mean()) - 2.1) < 0.01  # P(up) = 0.1, std of mean 0.002
    assert torch.equal(q, stoch.quantize(w))
    assert not torch.equal(q, IntScheme(bits=4, rounding="stochastic", seed=4).quantize(w))
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(stoch.quantize(w, generator=g1), stoch.quantize(w, generator=g2))


# --- ternary ----------------------------------------------------------------------------------


def test_ternary_max_rule_threshold_and_alpha():
    w = t([1.0, -0.5, 0.04, 0.06, -0.01])
    enc = TernaryScheme().encode(w)  # delta = 0.05: keeps 1, -0.5, 0.06; alpha = 1.56 / 3
    assert enc.codes.tolist() == [2, 0, 1, 2, 1]
    assert enc.params["alpha"].item() == pytest.approx(0.52)
    assert torch.allclose(TernaryScheme().decode(enc), t([0.52, -0.52, 0, 0.52, 0]))


def test_ternary_twn_rule_and_custom_factor():
    w = t([1.0, -0.5, 0.04, 0.06, -0.01])  # mean|w| = 0.322, delta = 0.2254: keeps 1, -0.5
    assert torch.allclose(TernaryScheme(rule="twn").quantize(w), t([0.75, -0.75, 0, 0, 0]))
    assert TernaryScheme(rule="twn").describe() == "ternary-twn"
    # factor 0.5 of max: delta = 0.5, |w| > 0.5 strictly keeps only 1.0
    assert torch.allclose(TernaryScheme(delta_factor=0.5).quantize(w), t([1.0, 0, 0, 0, 0]))


def test_ternary_values_are_three_levels():
    torch.manual_seed(2)
    q = TernaryScheme().quantize(torch.randn(1000))
    assert len(set(q.tolist())) == 3 and q.max() == -q.min()


# --- fixed point ------------------------------------------------------------------------------


def test_fixed_point_q3_5_grid_range_and_saturation():
    scheme = FixedPointScheme(integer_bits=3, fractional_bits=5)
    assert scheme.code_bits == 9 and scheme.value_range == (-8.0, 8 - 1 / 32)
    w = t([0.0, 1 / 64, 3 / 64, 0.1, -0.1, 100.0, -100.0, 7.99])
    assert scheme.quantize(w).tolist() == [0.0, 0.0, 2 / 32, 3 / 32, -3 / 32, 8 - 1 / 32, -8.0, 8 - 1 / 32]
    enc = scheme.encode(w)
    assert enc.codes.dtype == torch.int32
    assert enc.codes.tolist() == [256, 256, 258, 259, 253, 511, 0, 511]
    # STE: no gradient where saturated
    x = w.clone().requires_grad_()
    scheme.fake_quant(x).sum().backward()
    assert x.grad.tolist() == [1, 1, 1, 1, 1, 0, 0, 0]  # 7.99 > 8 - 1/32 saturates too


def test_fixed_point_truncate_floors_twos_complement():
    scheme = FixedPointScheme(integer_bits=1, fractional_bits=2, rounding="truncate")
    assert scheme.quantize(t([0.3, -0.3, 0.99])).tolist() == [0.25, -0.5, 0.75]


def test_fixed_point_stochastic_expectation():
    scheme = FixedPointScheme(integer_bits=2, fractional_bits=1, rounding="stochastic", seed=0)
    q = scheme.quantize(torch.full((40000,), 0.8))  # 0.8 = 1.6 steps of 0.5: up with p = 0.6
    assert set(q.tolist()) == {0.5, 1.0}
    assert abs(float(q.mean()) - 0.8) < 0.01


def test_fixed_point_rejects_impossible_formats():
    with pytest.raises(ValueError):
        FixedPointScheme(integer_bits=20, fractional_bits=10)


# --- fp32 -------------------------------------------------------------------------------------


def test_fp32_is_identity():
    scheme = Fp32Scheme()
    w = torch.randn(3, requires_grad=True)
    assert scheme.is_identity and not PotScheme().is_identity
    assert scheme.fake_quant(w) is w
    assert torch.equal(scheme.quantize(w), w.detach())
    with pytest.raises(ConfigError, match="no codes"):
        scheme.encode(w)


# --- shared behaviour -------------------------------------------------------------------------


ALL = [
    PotScheme(bits=2),
    PotScheme(bits=4, log_rounding=True),
    PotScheme(bits=8),
    ApotScheme(bits=3),
    ApotScheme(bits=8),
    IntScheme(bits=2),
    IntScheme(bits=16, per_channel=False),
    IntScheme(bits=4, rounding="stochastic", seed=5),
    TernaryScheme(),
    TernaryScheme(rule="twn", delta_factor=0.5),
    FixedPointScheme(integer_bits=0, fractional_bits=7),
    FixedPointScheme(integer_bits=3, fractional_bits=5, rounding="truncate"),
]


@pytest.mark.parametrize("scheme", ALL, ids=lambda s: s.describe())
def test_from_dict_round_trip_decodes_the_same_bits(scheme):
    torch.manual_seed(0)
    w = torch.randn(6, 5, 3) * 0.2
    enc = scheme.encode(w)
    rebuilt = WeightScheme.from_dict(enc.scheme)
    assert rebuilt == scheme and type(rebuilt) is type(scheme)
    assert torch.equal(rebuilt.decode(enc), scheme.decode(enc))
    assert torch.equal(scheme.quantize(w), scheme.quantize(w))
    assert torch.equal(scheme.decode(enc), scheme.quantize(w))
    assert enc.codes.shape == w.shape and enc.bits == scheme.code_bits
    assert int(enc.codes.max()) < 2**scheme.code_bits


@pytest.mark.parametrize("scheme", ALL, ids=lambda s: s.describe())
def test_fake_quant_forward_is_bitwise_quantize(scheme):
    torch.manual_seed(1)
    w = (torch.randn(4, 7) * 0.3).requires_grad_()
    out = scheme.fake_quant(w)
    assert torch.equal(out.detach(), scheme.quantize(w))
    out.backward(torch.full_like(out, 2.0))
    assert set(w.grad.unique().tolist()) <= {0.0, 2.0}


def test_decode_with_another_scheme_is_refused():
    enc = PotScheme(bits=4).encode(torch.randn(3))
    with pytest.raises(ConfigError, match="cannot decode"):
        PotScheme(bits=5).decode(enc)


def test_from_dict_errors_name_the_field():
    with pytest.raises(ConfigError, match="bits"):
        WeightScheme.from_dict({"kind": "pot", "bits": 1})
    with pytest.raises(ConfigError, match="kind|tag"):
        WeightScheme.from_dict({"kind": "float8"})
    with pytest.raises(ConfigError, match="extra|oops"):
        WeightScheme.from_dict({"kind": "int", "bits": 8, "oops": 1})


def test_encoded_tensor_rejects_codes_that_do_not_fit():
    with pytest.raises(FileFormatError, match="outside"):
        EncodedTensor(codes=torch.tensor([0, 16], dtype=torch.uint8), bits=4, params={}, scheme={})
    with pytest.raises(FileFormatError, match="uint8"):
        EncodedTensor(codes=torch.tensor([0, 1], dtype=torch.int64), bits=4, params={}, scheme={})


def test_non_finite_weights_are_refused():
    with pytest.raises(InputError, match="NaN"):
        PotScheme().encode(t([1.0, math.nan]))
    with pytest.raises(InputError, match="floating"):
        IntScheme().encode(torch.tensor([1, 2]))


def test_decode_accepts_a_stored_scheme_without_default_fields():
    w = torch.randn(4, 3)
    enc = IntScheme(bits=4).encode(w)
    stored = EncodedTensor(
        codes=enc.codes, bits=enc.bits, params=enc.params, scheme={"kind": "int", "bits": 4}
    )
    assert torch.equal(WeightScheme.from_dict(stored.scheme).decode(stored), IntScheme(bits=4).quantize(w))
