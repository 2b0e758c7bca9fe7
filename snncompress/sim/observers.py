"""Reusable runner observers: spike counting and full recording."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn


class SpikeCounter:
    """Per layer: total spikes, neuron-steps seen, neurons per sample, and each neuron's spike count
    (summed over samples and steps: the per-neuron firing rates that firing drift compares)."""

    def __init__(self) -> None:
        self.spikes: dict[str, float] = defaultdict(float)
        self.per_neuron: dict[str, torch.Tensor] = {}
        self.neuron_steps: dict[str, int] = defaultdict(int)
        self.neurons: dict[str, int] = {}
        self.steps: dict[str, int] = defaultdict(int)
        self.samples: dict[str, int] = defaultdict(int)

    def on_step(self, layer: str, module: nn.Module, step: int, spikes: torch.Tensor,
                membrane: torch.Tensor) -> None:
        fired = spikes.detach().ne(0).flatten(1).sum(0)  # [neurons]: one reduction gives both figures
        self.spikes[layer] += float(fired.sum())
        self.per_neuron[layer] = fired if layer not in self.per_neuron else self.per_neuron[layer] + fired
        self.neuron_steps[layer] += spikes.numel()
        self.neurons[layer] = spikes[0].numel()
        if step == 0:
            self.samples[layer] += spikes.shape[0]
        self.steps[layer] = max(self.steps[layer], step + 1)

    def firing_rates(self) -> dict[str, float]:
        """Spikes per neuron per time step, per layer."""
        return {k: self.spikes[k] / max(self.neuron_steps[k], 1) for k in self.neuron_steps}

    def neuron_rates(self) -> dict[str, torch.Tensor]:
        """Spikes per step of each neuron, per layer (``[neurons]``, float64 on the CPU)."""
        out = {}
        for k, counts in self.per_neuron.items():
            seen = self.neuron_steps[k] / max(self.neurons.get(k, 1), 1)  # samples x steps
            out[k] = counts.double().cpu() / max(seen, 1)
        return out


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
