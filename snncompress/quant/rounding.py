"""Rounding schemes for uniform grids (tinySNN §2.3; Hopkins et al. 2020).

Given a real value ``x`` already expressed in units of the grid step:

* ``nearest``: ``round(x)``, ties to even (``torch.round``, IEEE round-half-even).
* ``truncate``: ``floor(x)``: drops the fractional bits of the two's-complement value, as a
  fixed-point datapath does when it discards LSBs (rounds toward minus infinity, not toward zero).
* ``stochastic``: ``floor(x) + 1[r < x - floor(x)]`` with ``r ~ U[0, 1)``: rounds up with
  probability equal to the fractional part, so ``E[q] = x``. The draws come from a
  ``torch.Generator`` so that a fixed seed gives the same codes on every run.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

Rounding = Literal["nearest", "truncate", "stochastic"]
ROUNDING_MODES: tuple[str, ...] = get_args(Rounding)


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator seeded with ``seed`` (same seed, same draws)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def round_to_grid(
    x: torch.Tensor, rounding: Rounding, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Round ``x`` to integers (still a float tensor) with the given scheme.

    Args:
        x: Values in units of the grid step.
        rounding: ``"nearest"``, ``"truncate"`` or ``"stochastic"``.
        generator: Source of the uniform draws for ``"stochastic"``; required for that mode.

    Returns:
        A new float tensor of integers, same shape as ``x``.

    Raises:
        ValueError: unknown rounding, or ``"stochastic"`` without a generator.
    """
    if rounding == "nearest":
        return torch.round(x)
    if rounding == "truncate":
        return torch.floor(x)
    if rounding == "stochastic":
        if generator is None:
            raise ValueError("stochastic rounding needs a torch.Generator (seed it for reproducible codes)")
        low = torch.floor(x)
        draws = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return low + (draws < (x - low)).to(x.dtype)
    raise ValueError(f"unknown rounding {rounding!r}; use one of {', '.join(ROUNDING_MODES)}")
