"""Property tests: codes stay in range, decode(encode) is deterministic and survives from_dict."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompress.quant import (
    ApotScheme,
    FixedPointScheme,
    IntScheme,
    PotScheme,
    TernaryScheme,
    WeightScheme,
)
from snncompress.quant.apot import apot_levels

schemes = st.one_of(
    st.builds(PotScheme, bits=st.integers(2, 8), log_rounding=st.booleans()),
    st.builds(ApotScheme, bits=st.integers(3, 8)),
    st.builds(
        IntScheme,
        bits=st.integers(2, 16),
        per_channel=st.booleans(),
        rounding=st.sampled_from(["nearest", "truncate", "stochastic"]),
        seed=st.integers(0, 10),
    ),
    st.builds(TernaryScheme, rule=st.sampled_from(["max", "twn"])),
    st.builds(
        FixedPointScheme,
        integer_bits=st.integers(0, 6),
        fractional_bits=st.integers(1, 8),
        rounding=st.sampled_from(["nearest", "truncate", "stochastic"]),
    ),
)


@st.composite
def weights(draw):
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    magnitude = draw(st.sampled_from([1e-3, 0.1, 1.0, 30.0]))
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * magnitude
    if draw(st.booleans()):
        w[0, 0] = 0.0
    return w


@settings(max_examples=150, deadline=None)
@given(scheme=schemes, w=weights())
def test_codes_in_range_and_decode_is_deterministic(scheme, w):
    enc = scheme.encode(w)
    assert enc.codes.shape == w.shape
    assert 0 <= int(enc.codes.min()) and int(enc.codes.max()) < 2**scheme.code_bits
    first, second = scheme.quantize(w), scheme.quantize(w)
    assert torch.equal(first, second)
    rebuilt = WeightScheme.from_dict(enc.scheme)
    assert rebuilt == scheme
    assert torch.equal(rebuilt.decode(enc), first)
    assert first.dtype == torch.float32


@settings(max_examples=80, deadline=None)
@given(bits=st.integers(2, 8), w=weights())
def test_pot_values_are_alpha_times_the_grid(bits, w):
    scheme = PotScheme(bits=bits)
    enc = scheme.encode(w)
    alpha = 2.0 ** int(enc.params["exponent"])
    grid = {0.0} | {s * 2.0**-j for j in range(2 ** (bits - 1) - 1) for s in (1, -1)}
    q = (scheme.decode(enc) / alpha).flatten()
    assert set(q.tolist()) <= grid
    # the sign is kept, and nothing grows past alpha
    assert ((q == 0) | (torch.sign(q) == torch.sign(w.flatten()))).all()


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(3, 8), w=weights())
def test_apot_values_are_table_levels(bits, w):
    enc = ApotScheme(bits=bits).encode(w)
    alpha = 2.0 ** int(enc.params["exponent"])
    assert set((ApotScheme(bits=bits).decode(enc) / alpha).flatten().tolist()) <= set(
        apot_levels(bits).tolist()
    )


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(2, 16), w=weights())
def test_int_symmetric_levels_and_error_bound(bits, w):
    enc = IntScheme(bits=bits).encode(w)
    q = enc.codes.to(torch.int64) - 2 ** (bits - 1)
    assert int(q.abs().max()) <= 2 ** (bits - 1) - 1
    error = (IntScheme(bits=bits).decode(enc) - w).abs()
    assert (error <= enc.params["scale"] * 0.5001 + 1e-12).all()
