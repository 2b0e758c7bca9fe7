"""Accuracy and firing rates of a model on a data set."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import DataError
from snncompress.sim.observers import SpikeCounter
from snncompress.sim.progress import progress_bar
from snncompress.sim.runner import Observer, RunOutput, SNNRunner, resolve_layout


@dataclass
class Evaluation:
    """Result of :func:`evaluate`.

    Attributes:
        accuracy: percent of samples whose prediction is their label; None on unlabelled data.
        predictions: each sample's prediction (argmax of the output spike counts), in data order.
        neuron_rates: per layer, each neuron's spikes per step (``[neurons]``): what firing drift
            (:func:`snncompress.sim.fidelity.firing_drift`) compares without running the model again.
    """

    accuracy: float | None
    samples: int
    loss: float = float("nan")  # mean cross-entropy of the output spike counts (labels within the outputs)
    firing_rates: dict[str, float] = field(default_factory=dict)
    spikes_per_sample: dict[str, float] = field(default_factory=dict)
    neurons: dict[str, int] = field(default_factory=dict)
    time_steps: int = 0
    predictions: torch.Tensor | None = field(default=None, repr=False, compare=False)
    neuron_rates: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The figures as JSON (without the per-sample predictions and per-neuron rates)."""
        skip = ("predictions", "neuron_rates")
        return {k: v for k, v in asdict(self).items() if k not in skip}


def prepare(model: nn.Module, data: DataBundle) -> SNNRunner:
    """A runner for ``model`` with the data's layout resolved and its labels checked.

    The layout is probed once per data set and model structure (style, layer types and shapes) and
    remembered on the bundle: compressing a model changes its values, never the layout its data has.
    """
    runner = SNNRunner(model)
    layouts = data.__dict__.setdefault("_layouts", {})
    key = _structure_key(model, runner.style)
    if key not in layouts:
        is_sequence = resolve_layout(runner, data.sample_input(), data.time_steps)
        data.is_sequence = is_sequence
        check_labels(runner, data)
        layouts[key] = is_sequence
    data.is_sequence = layouts[key]
    return runner


def _structure_key(model: nn.Module, style: str) -> tuple:
    return (style, tuple((n, type(m).__name__) for n, m in model.named_modules()),
            tuple((n, tuple(t.shape)) for n, t in model.state_dict().items()))


def check_labels(runner: SNNRunner, data: DataBundle) -> int:
    """The model's output count; raise DataError when the labels need more classes."""
    with torch.no_grad():
        out = runner.run(data.sample_input().unsqueeze(0), is_sequence=data.is_sequence,
                         time_steps=min(data.time_steps, 2))
    classes = out.spikes.shape[-1]
    if data.num_classes is not None and data.num_classes > classes:
        raise DataError(
            f"the data has labels up to {data.num_classes - 1} but the model has {classes} outputs"
        )
    return classes


@torch.no_grad()
def evaluate(model: nn.Module, data: DataBundle, *, show_progress: bool = False,
             description: str = "evaluate", instruments: Iterable[AbstractContextManager] = ()) -> Evaluation:
    """Classification accuracy (argmax of output spike counts) and per-layer firing rates.

    On unlabelled data (``data.labelled`` False) the accuracy is None; the predictions and firing
    rates are measured all the same (:func:`snncompress.sim.fidelity.compare` sets them against a
    reference model's).

    Args:
        instruments: context managers entered around the whole pass (e.g. the hardware probe's
            hooks, :class:`snncompress.costing.describe.Probe`), so that one pass over the data
            measures everything.
    """
    was_training = model.training
    model.eval()
    runner = prepare(model, data)
    try:
        with ExitStack() as stack, evaluate_batches(data, runner) as batches, progress_bar(show_progress) as bar:
            for instrument in instruments:
                stack.enter_context(instrument)
            task = bar.add_task(description, total=len(data))
            for x, y in data.loader():
                batches.run(x, y)
                bar.advance(task, y.shape[0])
    finally:
        model.train(was_training)
    return batches.result()


class BatchEvaluation:
    """The figures of :func:`evaluate`, accumulated batch by batch (:func:`evaluate_batches`)."""

    def __init__(self, data: DataBundle, runner: SNNRunner, is_sequence: bool):
        self.data, self.runner, self.is_sequence = data, runner, is_sequence
        self.counter = SpikeCounter()
        self.correct = self.total = self.loss_n = 0
        self.loss_sum = 0.0
        self.predictions: list[torch.Tensor] = []

    def run(self, x: torch.Tensor, y: torch.Tensor) -> RunOutput:
        """Run one batch and account for it."""
        out = self.runner.run(x, is_sequence=self.is_sequence, time_steps=self.data.time_steps)
        y = y.to(out.spikes.device)
        predicted = out.predictions()
        self.predictions.append(predicted.to("cpu"))
        self.correct += int((predicted == y).sum())
        self.total += y.shape[0]
        counts = out.spike_counts
        if (self.data.labelled and counts.dim() == 2 and y.dim() == 1 and counts.shape[0] == y.shape[0]
                and int(y.max()) < counts.shape[1]):
            self.loss_sum += float(torch.nn.functional.cross_entropy(counts.float(), y, reduction="sum"))
            self.loss_n += y.shape[0]
        return out

    def result(self) -> Evaluation:
        counter = self.counter
        return Evaluation(
            accuracy=100.0 * self.correct / max(self.total, 1) if self.data.labelled else None,
            samples=self.total,
            loss=self.loss_sum / self.loss_n if self.loss_n else float("nan"),
            firing_rates=counter.firing_rates(),
            spikes_per_sample={k: counter.spikes[k] / max(counter.samples[k], 1) for k in counter.spikes},
            neurons=dict(counter.neurons),
            time_steps=max(counter.steps.values(), default=0),
            predictions=torch.cat(self.predictions) if self.predictions else torch.zeros(0, dtype=torch.int64),
            neuron_rates=counter.neuron_rates(),
        )


@contextmanager
def evaluate_batches(data: DataBundle, runner: SNNRunner, *observers: Observer) -> Iterator[BatchEvaluation]:
    """Observe ``runner``'s model (its spike counter and ``observers``) while the caller feeds it batches
    with :meth:`BatchEvaluation.run`; :meth:`BatchEvaluation.result` gives :func:`evaluate`'s figures.
    The runner's layout must be resolved (:func:`prepare`); the data's reading at entry is the one used."""
    batches = BatchEvaluation(data, runner, data.is_sequence)
    with runner.observe(batches.counter, *observers):
        yield batches
