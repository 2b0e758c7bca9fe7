"""The training loop shared by the demo model, QAT and fine-tuning passes.

Adam (lr 1e-3 by default, SpQuant §5.2), constant or cosine-annealed over the run; loss =
cross-entropy on output spike counts, TET (mean over time of the per-step cross-entropy on the
output membrane, Deng et al. 2022), or ``distill``: label-free, against a frozen teacher's output
spike counts (:mod:`snncompress.sim.distill`). The best epoch by validation accuracy is kept (under
``distill``: by agreement with the teacher's predictions), ties broken by the lower validation loss
(a small validation set ties often). Deterministic for a given seed.

Under a distributed launch (``torchrun``; :mod:`snncompress.sim.distributed`) the model is trained
data-parallel (DistributedDataParallel, each rank on its part of every global batch) and validated on
shards whose counts are all-reduced, so every rank keeps the same epoch; only rank 0 shows progress.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from snncompress.data.loading import DataBundle
from snncompress.errors import ConfigError, DataError
from snncompress.sim import distributed
from snncompress.sim.constraints import Constraint, attached, constraints_for_training
from snncompress.sim.evaluate import Evaluation, evaluate, prepare
from snncompress.sim.progress import progress_bar
from snncompress.sim.runner import RunOutput, SNNRunner

LOSSES = ("ce", "tet", "distill")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    lr: float = 1e-3
    loss: str = "ce"
    seed: int = 0
    keep_best: bool = True
    schedule: str = "constant"  # or "cosine": lr annealed to 0 over all steps
    lr_scale: dict[str, float] = field(default_factory=dict)  # parameter name -> lr multiplier
    distill_layers: float = 0.0  # distill: weight of the per-layer firing-rate term (0: output counts only)
    distill_temperature: float = 0.0  # distill: softmax temperature of the counts; 0: the teacher's predictions


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        best_accuracy: the kept epoch's validation figure in percent: accuracy, or under ``distill``
            agreement with the teacher's predictions (``criterion`` says which).
    """

    best_epoch: int
    best_accuracy: float
    epochs: list[dict] = field(default_factory=list)
    criterion: str = "accuracy"
    teacher_samples: int | None = None  # distill: samples the teacher ran on (its targets are kept where exact)

    def best_metrics(self) -> dict:
        """``best_epoch`` and ``best_val_accuracy`` (``best_val_agreement`` under distill), as passes record them."""
        return {"best_epoch": self.best_epoch, f"best_val_{self.criterion}": self.best_accuracy}


def spike_count_loss(out: RunOutput, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    if loss == "tet" and out.membrane is not None:
        steps = out.membrane.shape[0]
        return sum(F.cross_entropy(out.membrane[t], y) for t in range(steps)) / steps
    return F.cross_entropy(out.spike_counts, y)


def train(model: nn.Module, train_data: DataBundle, val_data: DataBundle, config: TrainConfig, *,
          show_progress: bool = False, description: str = "train",
          constraints: Iterable[Constraint] = (),
          keep_state_constraints: bool = True,
          after_step: Callable[[nn.Module], None] | None = None,
          step_context: Callable[[], AbstractContextManager] | None = None,
          teacher: nn.Module | None = None) -> TrainResult:
    """Train ``model`` in place and leave it with the best epoch's weights.

    Args:
        constraints: training constraints (:mod:`snncompress.sim.constraints`): attached before the
            first step, around and after each step, detached at the end (also on error), after the
            best epoch's weights are restored.
        keep_state_constraints: also keep every compression already applied to the model (pruned
            weights stay zero, stored codes stay on their grid): :func:`state_constraints`. Leave it on
            unless you are deliberately undoing a compression.
        after_step: called after each optimizer step, after the constraints' ``after_step``.
        step_context: entered around each step's forward and backward, inside the constraints'.
        teacher: the frozen model ``loss="distill"`` trains against
            (:func:`snncompress.sim.distill.frozen_teacher`, taken before the model was changed).

    Raises:
        ConfigError: ``distill`` without a teacher, or an unknown loss or schedule.
        DataError: a labelled loss on unlabelled data.
    """
    if config.loss not in LOSSES:
        raise ConfigError(f"unknown loss '{config.loss}' (choose from {', '.join(LOSSES)})")
    if config.loss == "distill" and teacher is None:
        raise ConfigError("loss distill trains against a teacher: pass the model as it was before "
                          "(snncompress.sim.distill.frozen_teacher)")
    if config.loss != "distill":
        for what, data in (("training", train_data), ("validation", val_data)):
            if not data.labelled:
                raise DataError(f"the {what} data {data.name} has no labels; loss {config.loss} needs them: "
                                "fine-tune with --loss distill (against the model's own outputs before the pass)")
    given = list(constraints)
    active = constraints_for_training(model, given) if keep_state_constraints else given
    with attached(model, active):
        return _train(model, train_data, val_data, config, show_progress=show_progress, description=description,
                      constraints=active, after_step=after_step, step_context=step_context, teacher=teacher)


def _train(model, train_data, val_data, config: TrainConfig, *, show_progress, description, constraints,
           after_step, step_context, teacher) -> TrainResult:
    step_context = step_context or contextlib.nullcontext
    torch.manual_seed(config.seed)
    runner = prepare(model, train_data)
    net = distributed.wrap_for_training(model)  # DDP under torchrun, the model itself otherwise
    if net is not model:
        runner = SNNRunner(net, style=runner.style)
    show_progress = show_progress and distributed.is_main()
    val_data.is_sequence = train_data.is_sequence if val_data.dataset is train_data.dataset else val_data.is_sequence
    if config.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{config.schedule}' (choose from {', '.join(SCHEDULES)})")
    lr_scale = dict(config.lr_scale)
    for constraint in constraints:
        lr_scale.update(constraint.lr_scale())
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(lr_scale.get(_plain_name(name), 1.0), []).append(p)
    optimizer = torch.optim.Adam([{"params": ps, "lr": config.lr * k} for k, ps in groups.items()], lr=config.lr)
    scheduler = None
    if config.schedule == "cosine":
        steps = max(1, config.epochs * len(_EpochBatches(train_data, config.seed, 0)))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    distiller = None
    if config.loss == "distill":
        from snncompress.sim.distill import Teacher

        distiller = Teacher(teacher, layers=config.distill_layers > 0)
    criterion, short = ("agreement", "agree") if distiller is not None else ("accuracy", "acc")
    best_state = copy.deepcopy(model.state_dict())
    start = _validate(model, val_data, distiller, config)
    best_key = (start.accuracy, -start.loss if start.loss == start.loss else 0.0)
    result = TrainResult(best_epoch=0, best_accuracy=start.accuracy, criterion=criterion)
    with progress_bar(show_progress) as bar:
        per_epoch = _EpochBatches(train_data, config.seed, 0).samples  # this rank's samples
        task = bar.add_task(description, total=config.epochs * per_epoch, info=f"{short} {start.accuracy:.2f}%")
        for epoch in range(1, config.epochs + 1):
            model.train()
            total_loss, seen = 0.0, 0
            for x, y, index, weight, count in _EpochBatches(train_data, config.seed, epoch):
                optimizer.zero_grad(set_to_none=True)
                # the teacher runs outside the step's contexts: they change how the student computes
                targets = distiller.targets(x, index, train_data) if distiller is not None else None
                with ExitStack() as stack:
                    for constraint in constraints:
                        stack.enter_context(constraint.step_context())
                    stack.enter_context(step_context())
                    if distiller is None:
                        out = runner.run(x, is_sequence=train_data.is_sequence, time_steps=train_data.time_steps)
                        loss = spike_count_loss(out, y.to(out.spikes.device), config.loss)
                    else:
                        loss = _distill_step(runner, x, train_data, targets, config)
                    # a constraint's own term (a gate's sparsity cost) trains with the loss; the log shows the task loss
                    terms = [t for t in (c.loss_term() for c in constraints) if t is not None]
                    total = loss + sum(terms) if terms else loss
                    (total if weight == 1.0 else total * weight).backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                for constraint in constraints:
                    constraint.after_step(model)
                if after_step is not None:
                    after_step(model)
                total_loss += float(loss.detach()) * count
                seen += count
                bar.update(task, advance=count, info=f"epoch {epoch} loss {total_loss / max(seen, 1):.3f}")
            val = _validate(model, val_data, distiller, config)
            acc = val.accuracy
            total_loss, seen = distributed.all_reduce_sum([total_loss, seen])
            result.epochs.append({"epoch": epoch, "loss": total_loss / max(seen, 1), criterion: acc,
                                  "val_loss": val.loss})
            bar.update(task, info=f"epoch {epoch} loss {total_loss / max(seen, 1):.3f} {short} {acc:.2f}%")
            key = (acc, -val.loss if val.loss == val.loss else 0.0)
            if key > best_key or not config.keep_best:
                best_key = key
                result.best_accuracy, result.best_epoch = acc, epoch
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    if distiller is not None:
        result.teacher_samples = distiller.teacher_samples
    return result


def _distill_step(runner: SNNRunner, x: torch.Tensor, data: DataBundle, targets, config: TrainConfig) -> torch.Tensor:
    """The student's forward on ``x`` and its distillation loss against the teacher's ``targets``."""
    from snncompress.sim.distill import RateRecorder, distill_loss

    recorder = RateRecorder()
    with runner.observe(recorder) if config.distill_layers > 0 else contextlib.nullcontext():
        out = runner.run(x, is_sequence=data.is_sequence, time_steps=data.time_steps)
    return distill_loss(out, targets, temperature=config.distill_temperature, layer_weight=config.distill_layers,
                        rates=recorder.rates())


class _EpochBatches:
    """One epoch's training batches as ``(x, y, loss weight, samples)``: a seeded shuffle in one process
    (weight 1), or this rank's part of each global batch when distributed
    (:class:`~snncompress.sim.distributed.GlobalBatchShards`: the loss weight makes DDP's averaged
    gradient that of the global batch)."""

    def __init__(self, data: DataBundle, seed: int, epoch: int):
        from dataclasses import replace

        from snncompress.sim.distill import IndexedDataset

        data = replace(data, dataset=IndexedDataset(data.dataset))  # the same draws, each row's index beside it
        self.shards = distributed.global_batch_shards(len(data), data.options.batch_size, seed, epoch)
        if self.shards is None:
            self.loader = data.loader(shuffle=True, seed=seed + epoch)
            self.samples = len(data)
        else:
            self.loader = data.loader(batch_sampler=self.shards)
            self.samples = sum(self.shards.counts)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.shards is None:
            for x, y, i in self.loader:
                yield x, y, i, 1.0, y.shape[0]
        else:
            yield from ((x, y, i, w, n) for (x, y, i), w, n in zip(self.loader, self.shards.weights,
                                                                   self.shards.counts, strict=True))


def _validate(model: nn.Module, data: DataBundle, distiller=None, config: TrainConfig | None = None) -> Evaluation:
    """Accuracy and loss on ``data`` (under distill: agreement with the teacher's predictions, in percent,
    and the distillation loss); when distributed, each rank evaluates its share and the counts are
    all-reduced, so every rank gets the figures of the whole set (and takes the same decisions)."""
    from dataclasses import replace

    if distiller is not None:
        from snncompress.sim.distill import validate

        part = distiller.shard(data) if distributed.is_distributed() else data
        agree, samples, loss_sum = (validate(model, part, distiller, config.distill_temperature) if len(part)
                                    else (0, 0, 0.0))
        agree, samples, loss_sum = distributed.all_reduce_sum([agree, samples, loss_sum])
        return Evaluation(accuracy=100.0 * agree / max(samples, 1), samples=int(samples),
                          loss=loss_sum / samples if samples else float("nan"))
    if not distributed.is_distributed():
        return evaluate(model, data)

    part = replace(data, dataset=distributed.shard(data.dataset))
    local = evaluate(model, part) if len(part) else Evaluation(accuracy=0.0, samples=0)
    has_loss = local.loss == local.loss and local.samples > 0
    correct, samples, loss_sum, loss_n = distributed.all_reduce_sum([
        round(local.accuracy * local.samples / 100.0), local.samples,
        local.loss * local.samples if has_loss else 0.0, local.samples if has_loss else 0])
    return Evaluation(accuracy=100.0 * correct / max(samples, 1), samples=int(samples),
                      loss=loss_sum / loss_n if loss_n else float("nan"))


def _plain_name(name: str) -> str:
    """``0.parametrizations.weight.original`` -> ``0.weight`` (lr scales are given by plain names)."""
    return name.replace(".parametrizations.", ".").removesuffix(".original")
