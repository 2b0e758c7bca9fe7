"""Power-of-two weights (SpQuant §4.2.2, Eq. 14-18; Przewlocka-Rus et al. 2022).

    alpha = 2**round(log2(max|w|))        per tensor, itself a power of two (stored as its exponent)
    w_c   = clip(w / alpha, -1, 1)
    grid  = {0} U {+-2**-j : j = 0 .. 2**(b-1) - 2}
    w_q   = alpha * nearest(grid, w_c)

A multiply by a PoT weight is a shift. Code layout (b bits): the top bit is the sign, the low
``b-1`` bits an exponent index ``e``; ``e = 0`` is zero, ``e >= 1`` is magnitude ``2**-(e-1)``:

    code = (sign << (b-1)) | e,     value = (-1)**sign * alpha * 2**-(e-1)   (0 when e == 0)

Encode never emits ``sign=1, e=0`` ("minus zero"); decode reads it as 0. Rounding, ties away
from zero:

* nearest level (default): ``|w_c|`` goes up from ``2**-(j+1)`` to ``2**-j`` at the midpoint
  ``0.75 * 2**-j``; below ``2**-J`` (half the smallest level ``2**-(J-1)``, ``J = 2**(b-1) - 1``) it is 0.
* log domain (``log_rounding=True``): ``j = round(-log2|w_c|)`` (threshold at the geometric mean
  ``2**-(j+0.5)``); magnitudes with ``j > J - 1`` become 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from snncompress.quant.base import WeightScheme

_LOG_ROUND_MANTISSA = 2.0**-0.5  # frexp mantissa at which round(log2 m) moves up an exponent


def pot_scale_exponent(w: torch.Tensor) -> int:
    """``round(log2(max|w|))`` (0 for an all-zero tensor), clipped to float32's exponent range."""
    max_abs = float(w.abs().max()) if w.numel() else 0.0
    if max_abs == 0.0:
        return 0
    return max(-149, min(127, math.floor(math.log2(max_abs) + 0.5)))


def scale_from_exponent(exponent: torch.Tensor) -> torch.Tensor:
    """``2**exponent`` as float32 (exact)."""
    return torch.ldexp(torch.ones((), dtype=torch.float32), exponent.to(torch.int32))


class PotScheme(WeightScheme):
    """Power-of-two weights, per-tensor power-of-two scale, ``bits`` in 2..8."""

    kind: Literal["pot"] = "pot"
    bits: int = Field(4, ge=2, le=8, description="bits per weight: 1 sign bit + exponent index")
    log_rounding: bool = Field(False, description="round in the log domain instead of to the nearest level")

    @property
    def code_bits(self) -> int:
        return self.bits

    @property
    def num_exponents(self) -> int:
        """J = 2**(b-1) - 1 non-zero magnitudes 2**0 .. 2**-(J-1)."""
        return (1 << (self.bits - 1)) - 1

    def describe(self) -> str:
        return f"pot{self.bits}" + ("-log" if self.log_rounding else "")

    def _encode(self, w, generator):
        exponent = pot_scale_exponent(w)
        alpha = scale_from_exponent(torch.tensor(exponent))
        w_c = (w / alpha).clamp_(-1.0, 1.0)
        magnitude = w_c.abs()
        mantissa, frexp_exp = torch.frexp(
            magnitude
        )  # magnitude = mantissa * 2**frexp_exp, mantissa in [0.5, 1)
        frexp_exp = frexp_exp.to(torch.int64)
        big = self.num_exponents
        if self.log_rounding:
            up = mantissa.double() >= _LOG_ROUND_MANTISSA
            j = -(frexp_exp - (~up).to(torch.int64))
            is_zero = (magnitude == 0) | (j > big - 1)
        else:
            j = -(frexp_exp - (mantissa < 0.75).to(torch.int64))
            is_zero = magnitude < 2.0**-big
        index = torch.where(is_zero, 0, j.clamp(0, big - 1) + 1)
        sign = ((w_c < 0) & ~is_zero).to(torch.int64)
        codes = (sign << (self.bits - 1)) | index
        return codes, {"exponent": torch.tensor(exponent, dtype=torch.int32)}

    def _decode(self, codes, params):
        index = codes & ((1 << (self.bits - 1)) - 1)
        negative = (codes >> (self.bits - 1)).bool()
        magnitude = torch.ldexp(torch.ones(codes.shape, dtype=torch.float32), (1 - index).to(torch.int32))
        magnitude = torch.where(index == 0, 0.0, magnitude) * scale_from_exponent(params["exponent"])
        return torch.where(negative, -magnitude, magnitude)

    def _ste_mask(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return w.abs() <= scale_from_exponent(params["exponent"])

    def _grid_params(self, w):
        return {"exponent": torch.tensor(pot_scale_exponent(w), dtype=torch.int32)}

    def _level_codes(self) -> torch.Tensor:
        # zero first: code 0, never the "minus zero" code that encode does not emit
        index = torch.arange(1, self.num_exponents + 1)
        return torch.cat([torch.zeros(1, dtype=torch.int64), index, (1 << (self.bits - 1)) | index])
