"""Reusable runner observers: spike counting and full recording."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn


class SpikeCounter:
    """Per layer: total spikes, neuron-steps seen, and neurons per sample."""

    def __init__(self) -> None:
        self.spikes: dict[str, float] = defaultdict(float)
        self.neuron_steps: dict[str, int] = defaultdict(int)
        self.neurons: dict[str, int] = {}
        self.steps: dict[str, int] = defaultdict(int)
        self.samples: dict[str, int] = defaultdict(int)

    def on_step(self, layer: str, module: nn.Module, step: int, spikes: torch.Tensor,
                membrane: torch.Tensor) -> None:
        self.spikes[layer] += float(spikes.detach().ne(0).sum())
        self.neuron_steps[layer] += spikes.numel()
        self.neurons[layer] = spikes[0].numel()
        if step == 0:
            self.samples[layer] += spikes.shape[0]
        self.steps[layer] = max(self.steps[layer], step + 1)

    def firing_rates(self) -> dict[str, float]:
        """Spikes per neuron per time step, per layer."""
        return {k: self.spikes[k] / max(self.neuron_steps[k], 1) for k in self.neuron_steps}


class Recorder:
    """Keep every layer's spikes and membrane per step (small batches only: it stores everything)."""

    def __init__(self) -> None:
        self.spikes: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.membrane: dict[str, list[torch.Tensor]] = defaultdict(list)

    def on_step(self, layer: str, module: nn.Module, step: int, spikes: torch.Tensor,
                membrane: torch.Tensor) -> None:
        self.spikes[layer].append(spikes.detach().clone())
        self.membrane[layer].append(membrane.detach().clone())

    def stacked(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``[T, B, ...]`` tensors per layer."""
        return ({k: torch.stack(v) for k, v in self.spikes.items()},
                {k: torch.stack(v) for k, v in self.membrane.items()})
