"""Membrane clipping statistics and the clipping sweep (SpQuant §4.1, Eq. 5-6).

The membrane here is the *stored* one, ``v[t]``: snnTorch's membrane after this step's reset and
before the leak (:func:`snncompress.models.membrane.stored_membrane`; ``beta * v[t]`` is what the
neuron carries into step t+1, and it is what the quantize pass's ``clip`` acts on). Values are in
units of the layer's threshold, ``v[t] / Vth``, as the quantize pass's ``clip`` is. With
``t = 1 .. T`` the time steps and ``i`` a neuron of one sample (all samples pooled):

    Gamma_u(c) = { i : v_i[1] / Vth < c }                                   (Eq. 5)
    r_s(c)     = 1/(T-1) * sum_{t=2..T} |{ i in Gamma_u(c) : s_i[t] = 1 }| / |Gamma_u(c)|   (Eq. 6)

``Gamma_u`` is reported as the fraction of all neurons (of all samples) it holds; ``r_s`` is the
share of those "silent" neurons that fire at a step, averaged over ``t = 2..T``; ``r_ever`` is the
share of them that fire at any later step. ``U_min`` is the lowest ``v[t] / Vth`` over all steps,
neurons and samples. Every statistic comes from one run of the model as it is (unclipped): the
observer sees the membrane before any storage hook (:class:`~snncompress.sim.runner.SNNRunner`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import DataError
from snncompress.models.membrane import clipped_membrane, stored_membrane
from snncompress.sim.evaluate import prepare
from snncompress.sim.observers import SpikeCounter
from snncompress.sim.progress import progress_bar
from snncompress.sim.runner import SNNRunner

HISTOGRAM_BIN = 0.125  # x Vth: fine enough to show the integer levels of a grid of 8 per threshold
HISTOGRAM_LIMIT = 1024.0  # x Vth: values beyond are counted in the end bins (U_min stays exact)


class MembraneHistogram:
    """Counts of ``v / Vth`` in bins of ``width``, growing to the range seen (bin k holds [k w, (k+1) w))."""

    def __init__(self, width: float = HISTOGRAM_BIN) -> None:
        self.width = width
        self.offset = 0  # index of the first bin
        self.counts: torch.Tensor | None = None

    def add(self, values: torch.Tensor) -> None:
        values = values[torch.isfinite(values)]
        if values.numel() == 0:
            return
        limit = int(HISTOGRAM_LIMIT / self.width)
        index = torch.floor(values / self.width).long().clamp_(-limit, limit - 1)
        low, high = int(index.min()), int(index.max())
        if self.counts is None:
            self.offset, self.counts = low, torch.zeros(high - low + 1, dtype=torch.long)
        if low < self.offset:
            self.counts = torch.cat([torch.zeros(self.offset - low, dtype=torch.long), self.counts])
            self.offset = low
        top = self.offset + len(self.counts) - 1
        if high > top:
            self.counts = torch.cat([self.counts, torch.zeros(high - top, dtype=torch.long)])
        self.counts += torch.bincount(index - self.offset, minlength=len(self.counts))

    def to_dict(self) -> dict:
        """``start`` (left edge of the first bin, x Vth), ``width`` and ``counts``."""
        counts = [] if self.counts is None else [int(n) for n in self.counts]
        return {"start": self.offset * self.width, "width": self.width, "counts": counts}


@dataclass
class LayerClipStats:
    """Accumulated clipping statistics of one neuron layer (see the module docstring)."""

    boundaries: list[float]
    neurons: int = 0  # per sample
    population: int = 0  # neurons x samples seen at t = 1
    u_min: float = math.inf
    silent: list[int] = field(default_factory=list)  # |Gamma_u| per boundary
    fire_rate_sum: list[float] = field(default_factory=list)  # sum over batches of fires / (T - 1)
    ever: list[int] = field(default_factory=list)  # Gamma_u neurons that fire at some t >= 2
    later_steps: int | None = None  # T - 1 of the last batch (None: no batch yet)
    histogram: MembraneHistogram = field(default_factory=MembraneHistogram)

    def __post_init__(self) -> None:
        k = len(self.boundaries)
        self.silent, self.fire_rate_sum, self.ever = [0] * k, [0.0] * k, [0] * k

    def gamma_u(self) -> list[float]:
        return [n / self.population if self.population else 0.0 for n in self.silent]

    def r_s(self) -> list[float | None]:
        """Eq. 6 per boundary; None when no neuron is below it or the run has a single step."""
        if not self.later_steps:
            return [None] * len(self.boundaries)
        return [f / n if n else None for f, n in zip(self.fire_rate_sum, self.silent, strict=True)]

    def r_ever(self) -> list[float | None]:
        if not self.later_steps:
            return [None] * len(self.boundaries)
        return [e / n if n else None for e, n in zip(self.ever, self.silent, strict=True)]


class ClipStatistics:
    """Runner observer: ``U_min``, ``Gamma_u`` and ``r_s`` of every observed layer for every boundary, in one run.

    Args:
        boundaries: clipping boundaries c in units of Vth.
        layers: the neuron layers to observe (None: all).
    """

    def __init__(self, boundaries: Sequence[float], layers: Sequence[str] | None = None) -> None:
        self.boundaries = [float(c) for c in boundaries]
        self._wanted = None if layers is None else set(layers)
        self.layers: dict[str, LayerClipStats] = {}
        self._first: dict[str, torch.Tensor] = {}  # v[1] / Vth of the current batch, flattened
        self._later: dict[str, torch.Tensor] = {}  # spikes per neuron at t >= 2
        self._fired: dict[str, torch.Tensor] = {}  # fired at some t >= 2
        self._steps: dict[str, int] = {}

    def on_step(self, layer: str, module: nn.Module, step: int, spikes: torch.Tensor,
                membrane: torch.Tensor) -> None:
        if self._wanted is not None and layer not in self._wanted:
            return
        stats = self.layers.get(layer)
        if stats is None:
            stats = self.layers[layer] = LayerClipStats(self.boundaries)
        if step == 0:
            self._flush(layer)
        with torch.no_grad():
            v = stored_membrane(module, spikes, membrane).detach().double()
            units = (v / module.threshold.detach().double().to(v.device)).reshape(v.shape[0], -1).cpu()
            fired = spikes.detach().ne(0).reshape(spikes.shape[0], -1).cpu()
        stats.u_min = min(stats.u_min, float(units.min())) if units.numel() else stats.u_min
        stats.histogram.add(units.reshape(-1))
        if step == 0:
            stats.neurons = units.shape[1]
            self._first[layer] = units.reshape(-1)
            self._later[layer] = torch.zeros(units.numel(), dtype=torch.float64)
            self._fired[layer] = torch.zeros(units.numel(), dtype=torch.bool)
            self._steps[layer] = 1
        elif layer in self._first:
            self._later[layer] += fired.reshape(-1)
            self._fired[layer] |= fired.reshape(-1)
            self._steps[layer] += 1

    def finish(self) -> None:
        """Count the last batch (call after the run)."""
        for layer in list(self._first):
            self._flush(layer)

    def _flush(self, layer: str) -> None:
        first = self._first.pop(layer, None)
        if first is None:
            return
        later, fired, steps = self._later.pop(layer), self._fired.pop(layer), self._steps.pop(layer)
        stats = self.layers[layer]
        stats.population += first.numel()
        # |{i : v_i[1] < c}| for every c at once: sort once, count with searchsorted, and sum the later
        # spikes of the neurons below each boundary from the cumulative sums
        order = torch.argsort(first)
        ordered = first[order]
        below = torch.searchsorted(ordered, torch.tensor(self.boundaries, dtype=ordered.dtype), right=False)
        spikes_sum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(later[order], 0)])
        fired_sum = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(fired[order].long(), 0)])
        stats.later_steps = steps - 1
        for k, n in enumerate(below.tolist()):
            stats.silent[k] += n
            stats.ever[k] += int(fired_sum[n])
            if steps > 1:
                stats.fire_rate_sum[k] += float(spikes_sum[n]) / (steps - 1)


@dataclass
class SweepPoint:
    """The model with its membrane clipped at ``boundary`` (None: unclipped), no fine-tuning."""

    boundary: float | None
    accuracy: float
    firing_rates: dict[str, float]


@dataclass
class ClipSweep:
    """The unclipped run's statistics and accuracy, and one run per boundary."""

    samples: int
    time_steps: int
    unclipped: SweepPoint
    statistics: ClipStatistics
    points: list[SweepPoint]


@torch.no_grad()
def clip_sweep(model: nn.Module, data: DataBundle, boundaries: Sequence[float], layers: Sequence[str],
               show_progress: bool = False) -> ClipSweep:
    """Measure the clipping statistics (one unclipped run) and the accuracy at every boundary (one run each).

    Args:
        model: the model; it is left as it was (hooks removed, mode restored).
        data: evaluation data.
        boundaries: clipping boundaries c < 0 in units of Vth.
        layers: the neuron layers to observe and clip.
        show_progress: one progress bar across the whole sweep, on stderr.
    """
    if not data.labelled:
        raise DataError(f"the clipping analysis measures accuracy at every boundary, and {data.name} has no "
                        "labels: pass labelled data (x and y)")
    was_training = model.training
    model.eval()
    try:
        runner = prepare(model, data)
        stats = ClipStatistics(boundaries, layers)
        batches = math.ceil(len(data) / data.options.batch_size)
        with progress_bar(show_progress) as bar:
            task = bar.add_task("clip sweep", total=batches * (1 + len(boundaries)), info="unclipped")
            unclipped = _run(runner, data, None, stats, bar, task)
            stats.finish()
            points = []
            for c in boundaries:
                bar.update(task, info=f"c = {c:g}")
                with clipped_membrane(model, layers, c):
                    points.append(_run(runner, data, c, None, bar, task))
    finally:
        model.train(was_training)
    counter_steps = stats.layers[layers[0]].later_steps if layers and layers[0] in stats.layers else None
    time_steps = (counter_steps + 1) if counter_steps is not None else 0
    return ClipSweep(samples=len(data), time_steps=time_steps, unclipped=unclipped, statistics=stats, points=points)


def _run(runner: SNNRunner, data: DataBundle, boundary: float | None, stats: ClipStatistics | None,
         bar, task) -> SweepPoint:
    counter = SpikeCounter()
    observers = [counter] if stats is None else [counter, stats]
    correct = total = 0
    with runner.observe(*observers):
        for x, y in data.loader():
            out = runner.run(x, is_sequence=data.is_sequence, time_steps=data.time_steps)
            correct += int((out.predictions() == y).sum())
            total += y.shape[0]
            bar.advance(task, 1)
    return SweepPoint(boundary, 100.0 * correct / max(total, 1), counter.firing_rates())
