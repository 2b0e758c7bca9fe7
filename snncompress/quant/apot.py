"""Additive power-of-two weights (APoT; Li et al., ICLR 2020, Eq. 5 with n = 2 terms).

Each magnitude is the sum of two power-of-two terms drawn from interleaved exponent sets, which
puts more levels near zero than uniform and more near the top than plain PoT. With ``b`` bits
(one sign bit, ``B = b - 1`` magnitude bits) split as ``k0 = ceil(B/2)``, ``k1 = floor(B/2)``:

    p0 in {0} U {2**-(2i)   : i = 0 .. 2**k0 - 2}
    p1 in {0} U {2**-(2i+1) : i = 0 .. 2**k1 - 2}
    magnitudes M = {p0 + p1}                (2**B values, all distinct; max 1 + 1/2 = 1.5)
    levels      = -M U M,  sorted           (2**b - 1 values)

For even ``B`` this is APoT's own grid (up to its normalisation); at ``b = 3`` it is the uniform
grid {0, 1/2, 1, 3/2}. We keep the levels unnormalised so that every level is exactly
``alpha * (2**-i + 2**-j)``: two shifts and an add in hardware. The scale is a power of two, as for
PoT: ``alpha = 2**round(log2(max|w|))``, ``w_c = clip(w / alpha, -1.5, 1.5)`` (the top level is used
when ``max|w| / alpha >= 1.25``). Rounding: nearest level, ties away from zero.

Code layout: ``code`` = index of the level in the sorted level table (code 0 = most negative
level, zero sits at ``len(M) - 1``). At 8 bits some sums differ below float32 resolution
(e.g. ``2**-1 + 2**-26``); the table keeps each float32 value once, so it holds fewer than
``2**b - 1`` levels there (see :func:`apot_levels`).
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Literal

import torch
from pydantic import Field

from snncompress.errors import FileFormatError
from snncompress.quant.base import WeightScheme
from snncompress.quant.pot import pot_scale_exponent, scale_from_exponent

APOT_MAX_MAGNITUDE = 1.5


@lru_cache(maxsize=16)
def _magnitudes(bits: int) -> tuple[float, ...]:
    magnitude_bits = bits - 1
    k0, k1 = (magnitude_bits + 1) // 2, magnitude_bits // 2
    p0 = [Fraction(0)] + [Fraction(1, 2 ** (2 * i)) for i in range(2**k0 - 1)]
    p1 = [Fraction(0)] + [Fraction(1, 2 ** (2 * i + 1)) for i in range(2**k1 - 1)]
    exact = sorted({a + b for a in p0 for b in p1})
    as_f32 = torch.tensor([float(v) for v in exact], dtype=torch.float64).to(torch.float32)
    return tuple(float(v) for v in torch.unique(as_f32))  # sorted, float32-distinct


def apot_levels(bits: int) -> torch.Tensor:
    """The sorted signed level table (float32, in units of alpha) for ``bits`` bits."""
    mags = torch.tensor(_magnitudes(bits), dtype=torch.float32)
    return torch.cat([-mags[1:].flip(0), mags])


class ApotScheme(WeightScheme):
    """Additive power-of-two weights, per-tensor power-of-two scale, ``bits`` in 3..8."""

    kind: Literal["apot"] = "apot"
    bits: int = Field(4, ge=3, le=8, description="bits per weight: 1 sign bit + magnitude bits")

    @property
    def code_bits(self) -> int:
        return self.bits

    def describe(self) -> str:
        return f"apot{self.bits}"

    def _encode(self, w, generator):
        exponent = pot_scale_exponent(w)
        w_c = (w / scale_from_exponent(torch.tensor(exponent))).clamp_(
            -APOT_MAX_MAGNITUDE, APOT_MAX_MAGNITUDE
        )
        mags = torch.tensor(_magnitudes(self.bits), dtype=torch.float64)
        midpoints = (mags[1:] + mags[:-1]) / 2  # exact in float64
        # right=True: a magnitude equal to a midpoint goes to the larger level (ties away from zero)
        index = torch.bucketize(w_c.abs().double(), midpoints, right=True)
        zero_code = len(mags) - 1
        codes = torch.where(w_c < 0, zero_code - index, zero_code + index)
        return codes, {"exponent": torch.tensor(exponent, dtype=torch.int32)}

    def _decode(self, codes, params):
        levels = apot_levels(self.bits)
        if codes.numel() and int(codes.max()) >= len(levels):
            raise FileFormatError(
                f"{self.describe()}: code {int(codes.max())} beyond the {len(levels)}-level table"
            )
        return levels[codes] * scale_from_exponent(params["exponent"])

    def _ste_mask(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return w.abs() <= APOT_MAX_MAGNITUDE * scale_from_exponent(params["exponent"])

    def _grid_params(self, w):
        return {"exponent": torch.tensor(pot_scale_exponent(w), dtype=torch.int32)}

    def _level_codes(self) -> torch.Tensor:
        return torch.arange(len(apot_levels(self.bits)))
