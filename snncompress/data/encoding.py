"""Turn static samples into spike trains over time (direct or Poisson rate coding)."""

from __future__ import annotations

import torch

ENCODINGS = ("direct", "rate")


def rate_encode(x: torch.Tensor, time_steps: int, generator: torch.Generator) -> torch.Tensor:
    """Poisson (Bernoulli per step) rate coding of values in [0, 1].

    Args:
        x: ``[B, ...]`` intensities; clipped to [0, 1].
        time_steps: number of steps T.
        generator: seeded generator, so the same seed gives the same spikes.

    Returns:
        ``[B, T, ...]`` float tensor of 0/1 spikes.
    """
    p = x.clamp(0, 1).unsqueeze(1).expand(x.shape[0], time_steps, *x.shape[1:])
    return torch.bernoulli(p, generator=generator)
