"""Multi-spike Leaky and Synaptic neurons: sinabs's and Rockpool's default spike mode, for their NIR graphs.

sinabs's ``IAF`` (and ``LIF``) fire ``MultiSpike`` by default: in one step a neuron emits
``s[t] = trunc(u[t] / Vth)`` spikes when ``u[t] > 0`` and subtracts ``s[t] * Vth`` in the same step
(``MembraneSubtract``), so a membrane far above threshold fires several spikes at once. NIR's IF and LIF
nodes say nothing about this, so a graph sinabs wrote in that mode reads as a single-spike network unless
the import is told otherwise (``--nir-spike multi``). Rockpool's ``LIFTorch`` (a CubaLIF) fires the same
``floor(u / Vth)`` for ``u >= Vth`` (capped at 2^16), subtracting in the same step (``--nir-producer rockpool``).

:class:`MultiSpikeLeaky` is snnTorch's ``Leaky`` with that spike count: its state update, reset and
parameters are ``Leaky``'s, only ``fire`` (the spikes) and ``mem_reset`` (the reset signal) return the
count. With ``reset_delay=False`` and subtract reset, ``Leaky`` subtracts ``count * Vth`` in the same step,
which is sinabs's order exactly. The gradient is snnTorch's surrogate of the first spike (the count is
added straight-through), so the neuron still trains.
"""

from __future__ import annotations

import snntorch as snn
import torch


def spike_count(mem: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """sinabs's ``MultiSpike``: ``trunc(mem / threshold)`` where ``mem > 0``, else 0 (float)."""
    return (mem > 0) * torch.div(mem, threshold, rounding_mode="trunc")


class _MultiSpike:
    """``fire`` and ``mem_reset`` returning the spike count (module docstring)."""

    def fire(self, mem: torch.Tensor) -> torch.Tensor:
        single = self.spike_grad(mem - self.threshold)  # carries the surrogate gradient
        count = spike_count(mem, self.threshold)
        return (single + (count - single).detach()) * self.graded_spikes_factor

    def mem_reset(self, mem: torch.Tensor) -> torch.Tensor:
        return spike_count(mem, self.threshold).detach()


class MultiSpikeLeaky(_MultiSpike, snn.Leaky):
    """``snn.Leaky`` that emits ``trunc(u / Vth)`` spikes per step (module docstring)."""


class MultiSpikeSynaptic(_MultiSpike, snn.Synaptic):
    """``snn.Synaptic`` that emits ``trunc(u / Vth)`` spikes per step (module docstring)."""
