"""Ternary weights {-alpha, 0, +alpha} (TWN, Li et al. 2016; SpQuant authors' code).

    delta = 0.05 * max|w|        (rule "max", the SpQuant authors' threshold; default)
          | 0.7  * mean|w|       (rule "twn", Ternary Weight Networks)
    q     = sign(w) * 1[|w| > delta]
    alpha = mean(|w| over |w| > delta)        (per tensor; 0 when nothing is kept)
    w_q   = alpha * q

``delta_factor`` overrides the factor of the chosen rule. Stored as 2-bit codes (1.58 bits of
information): ``code = q + 1``, i.e. 0 = -alpha, 1 = 0, 2 = +alpha (3 is unused). The STE passes
the gradient everywhere (TWN trains the latent weights with an identity STE).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from snncompress.quant.base import WeightScheme

DEFAULT_DELTA_FACTOR = {"max": 0.05, "twn": 0.7}


class TernaryScheme(WeightScheme):
    """Ternary weights with a per-tensor magnitude ``alpha``."""

    kind: Literal["ternary"] = "ternary"
    rule: Literal["max", "twn"] = Field(
        "max", description="delta from max|w| (SpQuant code) or mean|w| (TWN)"
    )
    delta_factor: float | None = Field(
        None, gt=0, description="factor of the rule; None: 0.05 (max), 0.7 (twn)"
    )

    @property
    def code_bits(self) -> int:
        return 2

    @property
    def effective_delta_factor(self) -> float:
        return DEFAULT_DELTA_FACTOR[self.rule] if self.delta_factor is None else self.delta_factor

    def describe(self) -> str:
        label = "ternary" + ("-twn" if self.rule == "twn" else "")
        return label if self.delta_factor is None else f"{label}@{self.delta_factor:g}"

    def delta(self, w: torch.Tensor) -> float:
        """The zeroing threshold of float32 ``w``."""
        if not w.numel():
            return 0.0
        magnitude = w.abs()
        base = magnitude.max() if self.rule == "max" else magnitude.mean()
        return float(base) * self.effective_delta_factor

    def _encode(self, w, generator):
        magnitude = w.abs()
        kept = magnitude > self.delta(w)
        alpha = magnitude[kept].mean() if bool(kept.any()) else torch.zeros((), dtype=torch.float32)
        q = torch.sign(w).to(torch.int64) * kept
        return q + 1, {"alpha": alpha.to(torch.float32).reshape(())}

    def _decode(self, codes, params):
        return (codes - 1).to(torch.float32) * params["alpha"]

    def _level_codes(self) -> torch.Tensor:
        return torch.tensor([1, 0, 2])  # zero first: with alpha = 0 every weight is code 1
