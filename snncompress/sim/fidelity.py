"""Fidelity of a model to a reference on the same data: agreement, spike-count correlation, firing drift.

Accuracy can stay while a compressed model's firing drifts away from the model it came from
("Quantization of SNNs Beyond Accuracy", arXiv 2604.14487), and on unlabelled data accuracy cannot be
measured at all. :func:`compare` runs both models on every batch and reports, per neuron layer matched by
name:

* **agreement**: the percent of samples whose prediction (argmax of the output spike counts) is the
  reference's;
* **spike-count correlation**: Pearson's r between the two models' spike counts of each neuron in each
  sample (over neurons x samples; layers of the same shape only);
* **firing drift**: the earth mover's distance (1-D Wasserstein W1, :func:`wasserstein_1d`) between the
  distributions of the per-neuron firing rates (spikes per neuron per step, over the whole data set): how far
  the layer's firing distribution moved, in spikes per step; 0 when the rates are the same multiset.

:func:`firing_drift` gives agreement and drift from two :class:`~snncompress.sim.evaluate.Evaluation`\\ s
that ran separately on the same data (what a compression run has measured anyway: no extra pass);
correlation needs both models' per-sample counts side by side, so only :func:`compare` gives it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import DataError
from snncompress.sim.evaluate import Evaluation, evaluate_batches, prepare
from snncompress.sim.progress import progress_bar

Values = Sequence[float] | np.ndarray | torch.Tensor


def wasserstein_1d(u: Values, v: Values) -> float:
    """The earth mover's distance between the empirical distributions of ``u`` and ``v`` (equal weights).

    ``W1 = integral |F_u(x) - F_v(x)| dx`` over the sorted union of the values (exact; the same as
    ``scipy.stats.wasserstein_distance``); for samples of equal size it is the mean absolute difference
    of the sorted values.
    """
    a = np.sort(np.asarray(u, dtype=np.float64).ravel())
    b = np.sort(np.asarray(v, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("the earth mover's distance needs at least one value on each side")
    values = np.sort(np.concatenate([a, b]))
    deltas = np.diff(values)
    cdf_a = np.searchsorted(a, values[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, values[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * deltas))


@dataclass
class LayerFidelity:
    """One neuron layer of the model against the reference's layer of the same name.

    Attributes:
        neurons, reference_neurons: neurons per sample of each.
        firing_rate, reference_firing_rate: spikes per neuron per step, over the data set.
        correlation: Pearson's r of the per-sample, per-neuron spike counts (None: the layers differ in
            shape, or one side's counts are constant, e.g. a silent layer).
        emd: the earth mover's distance between the per-neuron firing rates, in spikes per step.
    """

    neurons: int
    reference_neurons: int
    firing_rate: float
    reference_firing_rate: float
    correlation: float | None
    emd: float | None


@dataclass
class Fidelity:
    """Result of :func:`compare` (and, without correlations, of :func:`firing_drift`).

    Attributes:
        agreement: percent of samples whose prediction is the reference's.
        samples: samples compared.
        layers: per neuron layer matched by name.
        unmatched: the model's neuron layers with no reference layer of that name.
        reference_unmatched: the reference's neuron layers with none in the model.
        evaluation, reference_evaluation: each model's own figures on the data (accuracy None on unlabelled
            data), measured in the same pass.
    """

    agreement: float
    samples: int
    layers: dict[str, LayerFidelity] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    reference_unmatched: list[str] = field(default_factory=list)
    evaluation: Evaluation | None = field(default=None, repr=False)
    reference_evaluation: Evaluation | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = {"agreement": self.agreement, "samples": self.samples,
               "layers": {k: asdict(v) for k, v in self.layers.items()},
               "unmatched": list(self.unmatched), "reference_unmatched": list(self.reference_unmatched)}
        if self.reference_evaluation is not None:
            out["reference_accuracy"] = self.reference_evaluation.accuracy
        return out

    def notes(self) -> list[str]:
        """What could not be compared, in words."""
        out = []
        if self.unmatched:
            out.append(f"no reference layer of the same name for: {', '.join(self.unmatched)}")
        if self.reference_unmatched:
            out.append(f"reference layers missing from the model: {', '.join(self.reference_unmatched)}")
        differ = [k for k, v in self.layers.items() if v.neurons != v.reference_neurons]
        if differ:
            out.append(f"layers of another size than the reference's (e.g. after shrink; no correlation, the "
                       f"drift compares the two rate distributions): {', '.join(differ)}")
        return out


class _BatchCounts:
    """Runner observer: each layer's per-sample, per-neuron spike counts of the current batch ``[B, neurons]``."""

    def __init__(self) -> None:
        self.counts: dict[str, torch.Tensor] = {}

    def on_step(self, layer: str, module: nn.Module, step: int, spikes: torch.Tensor,
                membrane: torch.Tensor) -> None:
        fired = spikes.detach().ne(0).flatten(1).double()
        self.counts[layer] = fired if step == 0 or layer not in self.counts else self.counts[layer] + fired


class _Pearson:
    """Pearson's r over streamed pairs, merged batch by batch (Chan et al.'s pairwise update: no
    cancellation from large raw sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean_a = self.mean_b = 0.0
        self.m2_a = self.m2_b = self.c_ab = 0.0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.double().reshape(-1), b.double().reshape(-1)
        n = a.numel()
        if n == 0:
            return
        ma, mb = float(a.mean()), float(b.mean())
        da, db = a - ma, b - mb
        m2a, m2b, cab = float((da * da).sum()), float((db * db).sum()), float((da * db).sum())
        total = self.n + n
        delta_a, delta_b = ma - self.mean_a, mb - self.mean_b
        self.m2_a += m2a + delta_a * delta_a * self.n * n / total
        self.m2_b += m2b + delta_b * delta_b * self.n * n / total
        self.c_ab += cab + delta_a * delta_b * self.n * n / total
        self.mean_a += delta_a * n / total
        self.mean_b += delta_b * n / total
        self.n = total

    def value(self) -> float | None:
        denom = math.sqrt(self.m2_a * self.m2_b)
        return None if denom == 0 else max(-1.0, min(1.0, self.c_ab / denom))


@torch.no_grad()
def compare(model: nn.Module, reference: nn.Module, data: DataBundle, *, show_progress: bool = False,
            description: str = "compare") -> Fidelity:
    """Run ``model`` and ``reference`` on every batch of ``data`` and compare them (see the module docstring).

    Both models see the same inputs (the data's time steps and encoding); neither is changed (modes are
    restored). Layers are matched by name, as a compressed file keeps its layer names.

    Raises:
        DataError: the data does not fit one of the models, or the outputs differ in shape.
    """
    modes = [(net, net.training) for net in (model, reference)]
    counters = (_BatchCounts(), _BatchCounts())
    pearson: dict[str, _Pearson] = {}
    agree = total = 0
    layout = data.is_sequence
    try:
        model.eval()
        reference.eval()
        with ExitStack() as stack:
            # each model's reading of the data (static or sequence) is resolved on its own
            model_run = stack.enter_context(evaluate_batches(data, prepare(model, data), counters[0]))
            ref_run = stack.enter_context(evaluate_batches(data, prepare(reference, data), counters[1]))
            bar = stack.enter_context(progress_bar(show_progress))
            task = bar.add_task(description, total=len(data))
            for x, y in data.loader():
                out = model_run.run(x, y)
                ref = ref_run.run(x, y)
                if out.spike_counts.shape != ref.spike_counts.shape:
                    raise DataError(f"the model's output spike counts have shape {list(out.spike_counts.shape)}, "
                                    f"the reference's {list(ref.spike_counts.shape)}: they cannot be compared")
                agree += int((out.predictions() == ref.predictions()).sum())
                total += x.shape[0]
                for layer, counts in counters[0].counts.items():
                    other = counters[1].counts.get(layer)
                    if other is not None and other.shape == counts.shape:
                        pearson.setdefault(layer, _Pearson()).add(counts, other)
                bar.advance(task, x.shape[0])
    finally:
        for net, was_training in modes:
            net.train(was_training)
        data.is_sequence = layout
    evaluation, ref_evaluation = model_run.result(), ref_run.result()
    fidelity = firing_drift(evaluation, ref_evaluation)
    fidelity.agreement = 100.0 * agree / max(total, 1)
    for layer, figures in fidelity.layers.items():
        figures.correlation = pearson[layer].value() if layer in pearson else None
    fidelity.evaluation, fidelity.reference_evaluation = evaluation, ref_evaluation
    return fidelity


def firing_drift(evaluation: Evaluation, reference: Evaluation) -> Fidelity:
    """Agreement and per-layer firing drift of two evaluations on the same data in the same order (no
    correlation: that needs :func:`compare`). A :class:`~snncompress.costing.measure.Measurement` has the
    same figures and serves as well.

    Raises:
        DataError: they saw different numbers of samples.
    """
    if evaluation.samples != reference.samples:
        raise DataError(f"the evaluations saw {evaluation.samples} and {reference.samples} samples: "
                        "compare them on the same data")
    preds, ref_preds = evaluation.predictions, reference.predictions
    agreement = float("nan")
    if preds is not None and ref_preds is not None and preds.shape == ref_preds.shape:
        agreement = 100.0 * float((preds == ref_preds).double().mean()) if preds.numel() else float("nan")
    rates, ref_rates = evaluation.neuron_rates, reference.neuron_rates
    layers = {}
    for name, r in rates.items():
        if name not in ref_rates:
            continue
        ref = ref_rates[name]
        layers[name] = LayerFidelity(
            neurons=int(r.numel()), reference_neurons=int(ref.numel()),
            firing_rate=evaluation.firing_rates.get(name, float(r.mean()) if r.numel() else 0.0),
            reference_firing_rate=reference.firing_rates.get(name, float(ref.mean()) if ref.numel() else 0.0),
            correlation=None,
            emd=wasserstein_1d(r, ref) if r.numel() and ref.numel() else None)
    return Fidelity(agreement=agreement, samples=evaluation.samples, layers=layers,
                    unmatched=[n for n in rates if n not in ref_rates],
                    reference_unmatched=[n for n in ref_rates if n not in rates])


def drift_summary(fidelity: Fidelity, what: str = "the model before") -> str:
    """One line: agreement and the largest firing drift."""
    line = f"agreement with {what}: {fidelity.agreement:.2f}% of predictions"
    drifts = {k: v.emd for k, v in fidelity.layers.items() if v.emd is not None}
    if drifts:
        worst = max(drifts, key=drifts.get)
        line += f"; firing drift (EMD of per-neuron rates) largest in {worst}: {drifts[worst]:.4f} spikes/step"
    return line
