"""Accuracy and firing rates of a model on a data set."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import DataError
from snncompress.sim.observers import SpikeCounter
from snncompress.sim.progress import progress_bar
from snncompress.sim.runner import SNNRunner, resolve_layout


@dataclass
class Evaluation:
    """Result of :func:`evaluate`."""

    accuracy: float
    samples: int
    loss: float = float("nan")  # mean cross-entropy of the output spike counts (labels within the outputs)
    firing_rates: dict[str, float] = field(default_factory=dict)
    spikes_per_sample: dict[str, float] = field(default_factory=dict)
    neurons: dict[str, int] = field(default_factory=dict)
    time_steps: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


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

    Args:
        instruments: context managers entered around the whole pass (e.g. the hardware probe's
            hooks, :class:`snncompress.costing.describe.Probe`), so that one pass over the data
            measures everything.
    """
    was_training = model.training
    model.eval()
    runner = prepare(model, data)
    counter = SpikeCounter()
    correct = total = 0
    loss_sum, loss_n = 0.0, 0
    with ExitStack() as stack, runner.observe(counter), progress_bar(show_progress) as bar:
        for instrument in instruments:
            stack.enter_context(instrument)
        task = bar.add_task(description, total=len(data))
        for x, y in data.loader():
            out = runner.run(x, is_sequence=data.is_sequence, time_steps=data.time_steps)
            y = y.to(out.spikes.device)
            correct += int((out.predictions() == y).sum())
            total += y.shape[0]
            counts = out.spike_counts
            if counts.dim() == 2 and y.dim() == 1 and counts.shape[0] == y.shape[0] and int(y.max()) < counts.shape[1]:
                loss_sum += float(torch.nn.functional.cross_entropy(counts.float(), y, reduction="sum"))
                loss_n += y.shape[0]
            bar.advance(task, y.shape[0])
    model.train(was_training)
    return Evaluation(
        accuracy=100.0 * correct / max(total, 1),
        samples=total,
        loss=loss_sum / loss_n if loss_n else float("nan"),
        firing_rates=counter.firing_rates(),
        spikes_per_sample={k: counter.spikes[k] / max(counter.samples[k], 1) for k in counter.spikes},
        neurons=dict(counter.neurons),
        time_steps=max(counter.steps.values(), default=0),
    )
