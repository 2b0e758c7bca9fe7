"""Label-free fine-tuning: train against the model's own outputs before the pass (knowledge distillation).

A pass that fine-tunes with ``loss: distill`` keeps a frozen copy of the model as it received it (the
*teacher*, :func:`frozen_teacher`) and trains the compressed model (the *student*) to reproduce the
teacher's outputs on the same inputs, so no label is ever read:

    L = CE( softmax(n_S), argmax n_T )                                    (distill_temperature 0, default)
    L = tau^2 * KL( softmax(n_T / tau) || softmax(n_S / tau) )            (tau > 0; Hinton et al. 2015, §2)
        + lambda * mean_l MSE(r_S,l, r_T,l)                               (distill_layers = lambda > 0)

``n`` are the output spike counts over the T steps (the logits a model trained with cross-entropy on counts
has), ``r_l`` the spikes per step of each neuron of neuron layer ``l`` per sample (layers matched by name).
The best epoch is chosen by the agreement of the student's predictions with the teacher's on the validation
part (ties: the lower distillation loss).

Why the teacher's predicted class by default: measured on QAT (ternary membrane + PoT4 weights, 5 epochs;
README "Without labels"), it came closest to QAT with labels on the demo and on a learned-beta MLP; soft
targets (KL at tau 0.25 to 4, MSE on output rates) scored lower on average. A likely reason (not measured apart):
with a spike count of 0..T per class, the teacher's soft distribution keeps its small count margins,
which the quantized student's count errors then flip; a hard target asks for a margin, as cross-entropy on
labels does. The per-layer term keeps hidden firing closer to the teacher's (a smaller earth mover's
distance per layer; README).

Cost: the teacher runs under ``no_grad`` once per batch (a forward without the backward). On a data set
whose samples are fixed tensors (a tensor file, ``digits``, rate coding drawn at load time) its targets
are the same every epoch, so they are kept per sample after the first time (:class:`Teacher`; up to
:data:`CACHE_BYTES`): the teacher then runs once per sample for the whole fine-tuning. A dataset built by
code may draw new inputs on every access (augmentation), so its targets are always computed afresh.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from snncompress.data.loading import DataBundle
from snncompress.sim.runner import RunOutput, SNNRunner

CACHE_BYTES = 512 << 20  # teacher targets kept per sample across epochs, per data set
DEFAULT_TEMPERATURE = 0.0  # the teacher's predicted class as the target: measured best for QAT (module docstring)


def frozen_teacher(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` as it is now (eval mode, no gradients): the teacher of a distillation.

    Taken at the start of a pass, before the pass changes anything (BatchNorm folding, quantizers).
    """
    from snncompress.models.membrane import copy_model

    teacher = copy_model(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def distill_metrics(result) -> dict:
    """What a pass records about a distillation (empty for a labelled loss): the teacher's samples run."""
    if result.criterion != "agreement":
        return {}
    return {"distill": {"teacher": "the model before this pass", "teacher_samples": result.teacher_samples}}


class RateRecorder:
    """Runner observer: per neuron layer, each sample's spikes summed over the steps (``[B, neurons]``),
    keeping the graph when the spikes carry one (the student's surrogate gradient flows through it)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps: dict[str, int] = defaultdict(int)

    def on_step(self, layer: str, module: nn.Module, step: int, spikes: torch.Tensor,
                membrane: torch.Tensor) -> None:
        layer = layer.removeprefix("module.")  # a DistributedDataParallel wrapper's prefix
        flat = spikes.flatten(1).float()
        self.sums[layer] = flat if layer not in self.sums else self.sums[layer] + flat
        self.steps[layer] += 1

    def rates(self) -> dict[str, torch.Tensor]:
        """Spikes per step of each neuron, per sample: ``[B, neurons]`` per layer."""
        return {k: v / max(self.steps[k], 1) for k, v in self.sums.items()}


@dataclass
class Targets:
    """The teacher's outputs for one batch: output spike counts ``[B, classes]`` and, when the per-layer
    term is on, each layer's per-sample firing rates ``[B, neurons]``."""

    counts: torch.Tensor
    rates: dict[str, torch.Tensor]


def distill_loss(out: RunOutput, targets: Targets, *, temperature: float = DEFAULT_TEMPERATURE,
                 layer_weight: float = 0.0, rates: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The output term (batch mean) plus ``layer_weight`` times the mean over matched layers of the MSE
    between the student's and teacher's per-sample firing rates.

    Output term, on the spike counts ``n`` (the logits a model trained with cross-entropy on counts has):

    * ``temperature`` > 0: ``tau^2 KL(softmax(n_T / tau) || softmax(n_S / tau))`` (Hinton et al. 2015);
    * ``temperature`` 0: the cross-entropy of ``softmax(n_S)`` with the teacher's prediction (the argmax
      of its counts, the first class on a tie, as predictions and agreement are defined).

    Args:
        out: the student's output on the batch.
        targets: the teacher's on the same batch.
        rates: the student's per-layer per-sample rates (:meth:`RateRecorder.rates`); needed when
            ``layer_weight`` > 0.
    """
    student = out.spike_counts.float().flatten(1)
    teacher = targets.counts.to(student.device).float().flatten(1)
    t = temperature
    if t > 0:
        loss = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                        reduction="batchmean", log_target=True) * (t * t)
    else:
        loss = F.cross_entropy(student, teacher.argmax(dim=1))
    if layer_weight > 0 and rates:
        terms = [F.mse_loss(rates[k], targets.rates[k].to(rates[k].device))
                 for k in targets.rates if k in rates and rates[k].shape == targets.rates[k].shape]
        if terms:
            loss = loss + layer_weight * torch.stack(terms).mean()
    return loss


class Teacher:
    """The frozen teacher of a fine-tuning and its targets, run under ``no_grad`` once per batch, or once
    per sample for the whole run where that is exact (see the module docstring).

    Args:
        model: the frozen teacher (:func:`frozen_teacher`).
        layers: also record each neuron layer's per-sample firing rates (the per-layer term).
        cache_bytes: the most memory the kept targets of one data set may take; 0: keep nothing.
    """

    def __init__(self, model: nn.Module, *, layers: bool = False, cache_bytes: int = CACHE_BYTES):
        self.model = model
        self.layers = layers
        self.cache_bytes = cache_bytes
        self.runner = SNNRunner(model)
        self._caches: dict[int, _Cache | None] = {}
        self._layouts: dict[int, tuple[Dataset, bool]] = {}  # per data set: whether its samples are sequences
        self._shards: dict[tuple, tuple[Dataset, DataBundle]] = {}
        self.teacher_samples = 0  # samples the teacher actually ran on (the cache's saving shows here)

    def targets(self, x: torch.Tensor, index: torch.Tensor, data: DataBundle) -> Targets:
        """The teacher's targets for the batch ``x`` (samples ``index`` of ``data.dataset``)."""
        cache = self._cache_for(data)
        if cache is not None and cache.filled is not None and bool(cache.filled[index].all()):
            return cache.get(index)
        targets = self._run(x, data)
        if cache is not None:
            cache.put(index, targets)
        return targets

    @torch.no_grad()
    def _run(self, x: torch.Tensor, data: DataBundle) -> Targets:
        from snncompress.sim.evaluate import prepare

        layout = self._layouts.get(id(data.dataset))
        if layout is None or layout[0] is not data.dataset:
            student_layout = data.is_sequence
            self.runner = prepare(self.model, data)  # probes the teacher's layout on this data (once per data set)
            layout = self._layouts[id(data.dataset)] = (data.dataset, data.is_sequence)
            data.is_sequence = student_layout
        recorder = RateRecorder()
        with self.runner.observe(recorder) if self.layers else contextlib.nullcontext():
            out = self.runner.run(x, is_sequence=layout[1], time_steps=data.time_steps)
        self.teacher_samples += x.shape[0]
        return Targets(out.spike_counts.detach().float().flatten(1), recorder.rates() if self.layers else {})

    def shard(self, data: DataBundle) -> DataBundle:
        """This rank's share of ``data`` for validation (:func:`snncompress.sim.distributed.shard`), the same
        object every epoch so that its targets are kept."""
        from dataclasses import replace

        from snncompress.sim import distributed

        key = ("shard", id(data.dataset))
        if key not in self._shards or self._shards[key][0] is not data.dataset:
            self._shards[key] = (data.dataset, replace(data, dataset=distributed.shard(data.dataset)))
        return self._shards[key][1]

    def _cache_for(self, data: DataBundle) -> _Cache | None:
        key = id(data.dataset)
        if key not in self._caches:
            fixed = self.cache_bytes > 0 and fixed_samples(data.dataset)
            self._caches[key] = _Cache(data.dataset, len(data), self.cache_bytes) if fixed else None
        cache = self._caches[key]
        return cache if cache is not None and cache.dataset is data.dataset and not cache.disabled else None


class _Cache:
    """Targets per sample index of one data set, allocated at the first batch (when their sizes are known)."""

    def __init__(self, dataset: Dataset, size: int, limit: int):
        self.dataset = dataset  # kept, so that the id used as the key cannot be reused
        self.size = size
        self.limit = limit
        self.disabled = False
        self.filled: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.rates: dict[str, torch.Tensor] = {}

    def put(self, index: torch.Tensor, targets: Targets) -> None:
        if self.filled is None:
            per_sample = targets.counts.shape[1] + sum(r.shape[1] for r in targets.rates.values())
            if self.size * per_sample * 4 > self.limit:
                self.disabled = True
                return
            self.filled = torch.zeros(self.size, dtype=torch.bool)
            self.counts = torch.zeros(self.size, targets.counts.shape[1])
            self.rates = {k: torch.zeros(self.size, r.shape[1]) for k, r in targets.rates.items()}
        self.counts[index] = targets.counts.cpu()
        for k, r in targets.rates.items():
            self.rates[k][index] = r.cpu()
        self.filled[index] = True

    def get(self, index: torch.Tensor) -> Targets:
        return Targets(self.counts[index], {k: r[index] for k, r in self.rates.items()})


def fixed_samples(dataset: Dataset) -> bool:
    """Whether every access to a sample of ``dataset`` returns the same tensor: tensors held in memory
    (a ``TensorDataset``, or a ``Subset`` of one). A dataset built by code may draw anew each time."""
    while isinstance(dataset, Subset | IndexedDataset):
        dataset = dataset.dataset
    return isinstance(dataset, TensorDataset)


class IndexedDataset(Dataset):
    """``dataset``'s items with their index appended, ``(x, y, i)``: which sample each batch row is, so that
    the teacher's targets can be kept per sample. The order a seeded loader draws is unchanged (a shuffle
    depends only on the length and the generator)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return x, y, index


@torch.no_grad()
def validate(model: nn.Module, data: DataBundle, teacher: Teacher, temperature: float) -> tuple[int, int, float]:
    """The student against the teacher on ``data``: ``(agreeing predictions, samples, summed loss)``
    (the output term of :func:`distill_loss`, summed over samples)."""
    from dataclasses import replace

    from snncompress.sim.evaluate import prepare

    was_training = model.training
    model.eval()
    runner = prepare(model, data)
    indexed = replace(data, dataset=IndexedDataset(data.dataset))
    agree = total = 0
    loss_sum = 0.0
    try:
        for x, _, index in indexed.loader():
            out = runner.run(x, is_sequence=data.is_sequence, time_steps=data.time_steps)
            targets = teacher.targets(x, index, data)
            student = out.spike_counts.flatten(1)
            agree += int((student.argmax(1).cpu() == targets.counts.argmax(1).cpu()).sum())
            total += x.shape[0]
            loss_sum += float(distill_loss(out, Targets(targets.counts, {}), temperature=temperature)) * x.shape[0]
    finally:
        model.train(was_training)
    return agree, total, loss_sum
