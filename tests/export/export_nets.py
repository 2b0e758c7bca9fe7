"""Tiny stepwise models for the export tests, and helpers to run and compare them.

Every builder draws its weights from its own seeded generator (the global RNG is left alone) and is
scaled so that its neurons fire on ``inputs()`` within a few steps, but not on every step.
"""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
import torch
from torch import nn

from snncompress.sim.runner import RunOutput, SNNRunner

T = 4
BATCH = 3


def _init(model: nn.Sequential, seed: int, gain: float = 1.5) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() > 1 and "recurrent" not in name:
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 0.8) * gain / p[0].numel() ** 0.5)
            elif name.endswith("recurrent.weight"):
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.4)
            elif name.endswith("bias"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.2)
    return model.eval()


def _leaky(**kw) -> snn.Leaky:
    return snn.Leaky(init_hidden=True, **{"beta": 0.8, **kw})


def leaky_linear(reset: str = "subtract", reset_delay: bool = True) -> nn.Sequential:
    """Linear(6->10) - Leaky - Linear(10->4) - Leaky(output)."""
    return _init(nn.Sequential(
        nn.Linear(6, 10), _leaky(reset_mechanism=reset, reset_delay=reset_delay),
        nn.Linear(10, 4), _leaky(beta=0.7, reset_mechanism=reset, reset_delay=reset_delay, output=True),
    ), seed=1, gain=2.5)


def per_neuron_leaky() -> nn.Sequential:
    """Per-neuron learnable beta and threshold, a bias-free Linear, a heaviside surrogate."""
    return _init(nn.Sequential(
        nn.Linear(6, 10, bias=False),
        _leaky(beta=torch.linspace(0.2, 0.95, 10), threshold=torch.linspace(0.6, 1.2, 10), learn_beta=True,
               learn_threshold=True, surrogate_disable=True),
        nn.Linear(10, 4), _leaky(threshold=torch.full((4,), 0.9), output=True, reset_mechanism="zero"),
    ), seed=2, gain=2.5)


def integrate_and_fire() -> nn.Sequential:
    """beta = 1 (no leak): NIR's IF."""
    return _init(nn.Sequential(nn.Linear(6, 8), _leaky(beta=1.0), nn.Linear(8, 4),
                               _leaky(beta=1.0, output=True)),
                 seed=3, gain=1.5)


def conv_synaptic(reset: str = "subtract", reset_delay: bool = True) -> nn.Sequential:
    """[1,6,6]: Conv2d - Synaptic - AvgPool2d - Flatten - Linear - Synaptic(output)."""
    return _init(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        snn.Synaptic(alpha=0.6, beta=0.7, init_hidden=True, reset_mechanism=reset, reset_delay=reset_delay),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 4),
        snn.Synaptic(alpha=0.5, beta=0.8, init_hidden=True, reset_mechanism=reset, reset_delay=reset_delay,
                     output=True),
    ), seed=4, gain=2.0)


def conv_sum_max_pool() -> nn.Sequential:
    """[2,8,8]: Conv2d - Leaky - MaxPool2d - Conv2d(no bias) - Leaky - sum pool - Flatten - Linear - Leaky."""
    return _init(nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), _leaky(beta=0.6), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, bias=False), _leaky(beta=0.5, reset_mechanism="zero"),
        nn.AvgPool2d(2, divisor_override=1), nn.Flatten(), nn.Linear(16, 4), _leaky(output=True),
    ), seed=5, gain=3.0)


def conv1d_leaky() -> nn.Sequential:
    """[2,10]: Conv1d(k3, stride 1) - Leaky - Flatten - Linear - Leaky(output), nested head."""
    return _init(nn.Sequential(
        nn.Conv1d(2, 3, 3), _leaky(beta=0.9), nn.Flatten(),
        nn.Sequential(nn.Linear(24, 4), _leaky(output=True)),
    ), seed=6, gain=3.0)


def rleaky_net(all_to_all: bool = True, reset: str = "subtract") -> nn.Sequential:
    """Linear - RLeaky (all-to-all Linear or one-to-one V) - Linear - Leaky(output)."""
    rec = (snn.RLeaky(beta=0.7, linear_features=10, init_hidden=True, reset_mechanism=reset) if all_to_all
           else snn.RLeaky(beta=0.7, V=torch.linspace(-0.5, 0.5, 10), all_to_all=False, init_hidden=True,
                           reset_mechanism=reset))
    return _init(nn.Sequential(nn.Linear(6, 10), rec, nn.Linear(10, 4), _leaky(output=True)),
                 seed=7, gain=2.5)


def no_reset() -> nn.Sequential:
    return _init(nn.Sequential(nn.Linear(6, 8), _leaky(reset_mechanism="none"), nn.Linear(8, 4),
                               _leaky(output=True, reset_mechanism="none")), seed=8, gain=1.6)


def onnx_only_net() -> nn.Sequential:
    """[2,12]: Conv1d - BatchNorm1d - Leaky - MaxPool1d - Dropout - Flatten - Linear - Leaky (no NIR form)."""
    model = _init(nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), _leaky(beta=0.6), nn.MaxPool1d(2), nn.Dropout(0.3),
        nn.Flatten(), nn.Linear(20, 4), _leaky(output=True),
    ), seed=10, gain=3.0)
    with torch.no_grad():
        model[1].running_mean.fill_(0.1)
        model[1].running_var.fill_(0.8)
    return model


def batchnorm_net() -> nn.Sequential:
    """Conv2d - BatchNorm2d - Leaky: BatchNorm has no NIR node."""
    return _init(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), _leaky(output=True)), seed=9)


# name -> (builder, one input time step's shape)
ROUND_TRIP: dict[str, tuple[Callable[[], nn.Sequential], tuple[int, ...]]] = {
    "leaky_subtract": (lambda: leaky_linear("subtract"), (6,)),
    "leaky_zero": (lambda: leaky_linear("zero"), (6,)),
    "leaky_subtract_no_delay": (lambda: leaky_linear("subtract", reset_delay=False), (6,)),
    "leaky_zero_no_delay": (lambda: leaky_linear("zero", reset_delay=False), (6,)),
    "leaky_no_reset": (no_reset, (6,)),
    "per_neuron_leaky": (per_neuron_leaky, (6,)),
    "integrate_and_fire": (integrate_and_fire, (6,)),
    "conv_synaptic_subtract": (lambda: conv_synaptic("subtract"), (1, 6, 6)),
    "conv_synaptic_zero": (lambda: conv_synaptic("zero"), (1, 6, 6)),
    "conv_synaptic_zero_no_delay": (lambda: conv_synaptic("zero", reset_delay=False), (1, 6, 6)),
    "conv_sum_max_pool": (conv_sum_max_pool, (2, 8, 8)),
    "conv1d_leaky": (conv1d_leaky, (2, 10)),
    "rleaky_all_to_all": (lambda: rleaky_net(True), (6,)),
    "rleaky_one_to_one_zero": (lambda: rleaky_net(False, "zero"), (6,)),
}


def inputs(shape: tuple[int, ...], batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *shape), generator=gen)


def run(model: nn.Module, x: torch.Tensor, steps: int = T) -> RunOutput:
    with torch.no_grad():
        return SNNRunner(model).run(x, is_sequence=False, time_steps=steps)


class LayerSpikes:
    """Observer: every neuron layer's spikes per step, in layer order."""

    def __init__(self):
        self.spikes: dict[str, list[torch.Tensor]] = {}

    def on_step(self, layer, module, step, spikes, membrane):
        self.spikes.setdefault(layer, []).append(spikes.detach().clone())

    def stacked(self) -> list[torch.Tensor]:
        return [torch.stack(v) for v in self.spikes.values()]


def layer_spikes(model: nn.Module, x: torch.Tensor, steps: int = T) -> list[torch.Tensor]:
    runner = SNNRunner(model)
    observer = LayerSpikes()
    with runner.observe(observer), torch.no_grad():
        runner.run(x, is_sequence=False, time_steps=steps)
    return observer.stacked()


class TernaryMembrane:
    """Stands in for ``snncompress.quant.membrane.MembraneQuantizer`` (its forward formula, levels -1..1)."""

    levels_low = -1
    levels_high = 1

    def quantize(self, u: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
        return threshold * torch.clamp(torch.round(u / threshold), self.levels_low, self.levels_high)

    def to_dict(self) -> dict:
        return {"levels_low": self.levels_low, "levels_high": self.levels_high}
