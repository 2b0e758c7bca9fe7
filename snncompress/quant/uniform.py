"""Uniform weight schemes: symmetric integers with scales, and fixed point Q(m.n) (tinySNN §2.3).

``int`` (b bits, symmetric, per output channel by default):

    scale_c = max|w_c| / (2**(b-1) - 1)          (1.0 for an all-zero channel)
    q       = clip(R(w / scale_c), -(2**(b-1) - 1), 2**(b-1) - 1)
    code    = q + 2**(b-1)                        (offset binary, in [1, 2**b - 1]; 0 is unused)

``fixed`` Q(m.n), no scale (see :mod:`snncompress.quant.fixed_point`):

    k    = clip(R(w * 2**n), -2**(m+n), 2**(m+n) - 1),   code = k + 2**(m+n)   (1 + m + n bits)

``R`` is ``nearest`` (ties to even), ``truncate`` (floor) or ``stochastic``; stochastic draws come
from the generator passed to ``encode`` or, by default, a fresh one seeded with ``seed``, so the
same call gives the same codes.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from snncompress.quant.base import WeightScheme
from snncompress.quant.fixed_point import MAX_FIXED_BITS, fixed_point_integers
from snncompress.quant.rounding import Rounding, round_to_grid, seeded_generator

_ROUNDING_TAG = {"nearest": "", "truncate": "-trunc", "stochastic": "-stoch"}


def _generator(generator: torch.Generator | None, seed: int, rounding: str) -> torch.Generator | None:
    if rounding != "stochastic":
        return None
    return generator if generator is not None else seeded_generator(seed)


class IntScheme(WeightScheme):
    """Symmetric uniform integers, ``bits`` in 2..16, per output channel (dim 0) or per tensor.

    Per-channel scales have shape ``(C, 1, ..., 1)``; tensors with fewer than 2 dims (biases,
    per-neuron parameters) always get one per-tensor scale (shape ``()``).
    """

    kind: Literal["int"] = "int"
    bits: int = Field(8, ge=2, le=16)
    per_channel: bool = Field(True, description="one scale per output channel (dim 0) instead of per tensor")
    rounding: Rounding = "nearest"
    seed: int = Field(0, description="seed of the stochastic-rounding draws when no generator is given")

    @property
    def code_bits(self) -> int:
        return self.bits

    @property
    def max_level(self) -> int:
        """Largest integer level, ``2**(b-1) - 1``."""
        return (1 << (self.bits - 1)) - 1

    def describe(self) -> str:
        return f"int{self.bits}" + ("" if self.per_channel else "-tensor") + _ROUNDING_TAG[self.rounding]

    def _scale(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_channel and w.dim() >= 2:
            if not w.numel():
                return torch.ones((w.shape[0],) + (1,) * (w.dim() - 1))
            max_abs = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
        else:
            max_abs = w.abs().max() if w.numel() else torch.zeros(())
        scale = max_abs / self.max_level
        return torch.where(scale > 0, scale, torch.ones_like(scale))

    def valid_codes(self, codes: torch.Tensor) -> torch.Tensor:
        # symmetric: code 0 (level -2**(b-1)) is never emitted, the levels are clamped to +-max_level
        codes = codes.to(torch.int64)
        return (codes >= 1) & (codes < (1 << self.bits))

    def _encode(self, w, generator):
        scale = self._scale(w)
        q = round_to_grid(w / scale, self.rounding, _generator(generator, self.seed, self.rounding))
        q = q.clamp_(-self.max_level, self.max_level).to(torch.int64)
        return q + (1 << (self.bits - 1)), {"scale": scale.contiguous()}

    def _decode(self, codes, params):
        return (codes - (1 << (self.bits - 1))).to(torch.float32) * params["scale"]

    def _grid_params(self, w):
        return {"scale": self._scale(w).contiguous()}

    def _neighbours(self, w, params):
        scale = params["scale"]
        scaled = w / scale
        low = torch.floor(scaled).clamp_(-self.max_level, self.max_level)
        high = torch.ceil(scaled).clamp_(-self.max_level, self.max_level)
        return low * scale, high * scale

    def _codes_of(self, values, params):
        q = torch.round(values / params["scale"]).clamp_(-self.max_level, self.max_level)
        return q.to(torch.int64) + (1 << (self.bits - 1))


class FixedPointScheme(WeightScheme):
    """Signed fixed point Q(m.n): 1 sign, ``integer_bits`` m and ``fractional_bits`` n bits."""

    kind: Literal["fixed"] = "fixed"
    integer_bits: int = Field(ge=0, le=MAX_FIXED_BITS - 1)
    fractional_bits: int = Field(ge=0, le=MAX_FIXED_BITS - 1)
    rounding: Rounding = "nearest"
    seed: int = Field(0, description="seed of the stochastic-rounding draws when no generator is given")

    @model_validator(mode="after")
    def _total_bits(self) -> FixedPointScheme:
        if not 2 <= self.code_bits <= MAX_FIXED_BITS:
            raise ValueError(f"1 + m + n = {self.code_bits} bits; use 2 to {MAX_FIXED_BITS} bits in all")
        return self

    @property
    def code_bits(self) -> int:
        return 1 + self.integer_bits + self.fractional_bits

    @property
    def value_range(self) -> tuple[float, float]:
        """``(-2**m, 2**m - 2**-n)``: the representable range."""
        m, n = self.integer_bits, self.fractional_bits
        return -(2.0**m), 2.0**m - 2.0**-n

    def describe(self) -> str:
        return f"fixed{self.integer_bits}.{self.fractional_bits}" + _ROUNDING_TAG[self.rounding]

    def _encode(self, w, generator):
        k = fixed_point_integers(
            w,
            self.integer_bits,
            self.fractional_bits,
            self.rounding,
            _generator(generator, self.seed, self.rounding),
        )
        return k.to(torch.int64) + (1 << (self.integer_bits + self.fractional_bits)), {}

    def _decode(self, codes, params):
        k = codes - (1 << (self.integer_bits + self.fractional_bits))
        return torch.ldexp(k.to(torch.float32), torch.tensor(-self.fractional_bits, dtype=torch.int32))

    def _grid_params(self, w):
        return {}

    def _neighbours(self, w, params):
        limit = 1 << (self.integer_bits + self.fractional_bits)
        n = torch.tensor(self.fractional_bits, dtype=torch.int32)
        scaled = torch.ldexp(w, n)
        low = torch.floor(scaled).clamp_(-limit, limit - 1)
        high = torch.ceil(scaled).clamp_(-limit, limit - 1)
        return torch.ldexp(low, -n), torch.ldexp(high, -n)

    def _codes_of(self, values, params):
        k = fixed_point_integers(values, self.integer_bits, self.fractional_bits, "nearest")
        return k.to(torch.int64) + (1 << (self.integer_bits + self.fractional_bits))

    def _ste_mask(self, w: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        low, high = self.value_range
        return (w >= low) & (w <= high)
