"""The threshold pass: learn each neuron layer's threshold through its own gradient path (SpQuant §4.4).

Fine-tunes the model (Adam, CE on spike counts or TET) with :class:`~snncompress.sim.thresholds.GPWThresholds`:
the gradient with respect to the membrane keeps the neuron's spike surrogate, the gradient with respect
to each layer's threshold is the Gradient Penalty Window over the neurons that fired (Eq. 24-27). The
weights fine-tune with it. Any earlier compression is kept by the training loop: pruned weights stay
zero, quantized weights stay on their grid, the membrane quantizer trains through SGS, and a threshold
stored in fixed point (``neuron_quant``) is re-encoded on its grid. The best epoch is chosen on the
training data (or a held-out part of it), never on the evaluation data.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from snncompress.data.loading import split_validation
from snncompress.errors import ConfigError
from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec
from snncompress.passes.kit import select_layers
from snncompress.sim.distill import distill_metrics, frozen_teacher
from snncompress.sim.thresholds import GPWThresholds
from snncompress.sim.training import TrainConfig, train


class ThresholdConfig(PassConfig):
    """Config of the threshold pass; keys mirror ``snncompress threshold`` flags."""

    epochs: int = Field(5, ge=1, le=1000, description="Fine-tuning epochs.")
    window: Literal["sigmoid", "triangle", "rectangle"] = Field(
        "sigmoid", description="Gradient Penalty Window of the threshold's gradient: sigmoid, triangle or "
                               "rectangle (each peaks at 1 with area = width).")
    window_width: float = Field(1.0, gt=0, le=100.0,
                                description="Width W of the window, in membrane units (u - Vth).")
    lr: float = Field(1e-3, gt=0, le=1.0, description="Learning rate (Adam) of the weights.")
    threshold_lr_scale: float = Field(10.0, gt=0, le=1e4,
                                      description="The thresholds' learning rate as a multiple of lr.")
    train_weights: bool = Field(True, description="Fine-tune the weights along with the thresholds; off: "
                                                  "only the thresholds train.")
    loss: Literal["ce", "tet", "distill"] = Field(
        "ce", description="Loss: ce (spike counts), tet, or distill (no labels: match the output spike counts of "
                          "the model as it was before the pass).")
    distill_layers: float = Field(0.0, ge=0.0, le=1e4, description="With loss distill: weight of a term that also "
                                  "matches each neuron layer's firing rates (0: output spike counts only).")
    distill_temperature: float = Field(
        0.0, ge=0.0, le=100.0,
        description="With loss distill: softmax temperature of the teacher's and student's output spike counts (KL "
                    "divergence); 0: train on the teacher's predicted classes (measured best for QAT).")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Learning rate over the run: constant, or cosine-annealed to 0.")
    validation_split: float = Field(
        0.0, ge=0.0, le=0.5,
        description="The fraction of the training data held out to choose the best epoch; 0: choose it by the "
                    "accuracy on all of the training data.")


def apply(model: nn.Module, config: ThresholdConfig, ctx: PassContext) -> PassResult:
    """Learn the thresholds of the targeted neuron layers in place; see the module docstring."""
    neurons = [s.name for s in select_layers(model, config, "neuron")]
    if not neurons:
        raise ConfigError("the model has no neuron layers whose threshold could be learned (check targets)")
    if ctx.train_data is None:
        raise ConfigError("the threshold pass trains: pass --train-data (or use --data digits)")
    teacher = frozen_teacher(model) if config.loss == "distill" else None
    constraint = GPWThresholds(neurons, window=config.window, width=config.window_width,
                               lr_scale=config.threshold_lr_scale)
    parts = split_validation(ctx.train_data, config.validation_split, ctx.seed) if config.validation_split else None
    train_part, val_part = parts if parts is not None else (ctx.train_data, ctx.train_data)
    validation = val_part.name if parts is not None else "the training data" + (
        " (too small to split)" if config.validation_split else "")
    frozen = [] if config.train_weights else [p for n, p in model.named_parameters()
                                              if p.requires_grad and not n.endswith("threshold")]
    for p in frozen:
        p.requires_grad_(False)
    try:
        result = train(model, train_part, val_part,
                       TrainConfig(epochs=config.epochs, lr=config.lr, loss=config.loss, seed=ctx.seed,
                                   schedule=config.schedule, distill_layers=config.distill_layers,
                                   distill_temperature=config.distill_temperature),
                       show_progress=ctx.show_progress, description="thresholds", constraints=[constraint],
                       teacher=teacher)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    thresholds = {n: {"before": constraint.before[n], "after": constraint.after[n]} for n in neurons}
    metrics = {"window": config.window, "window_width": config.window_width, **result.best_metrics(),
               "validation": validation, "epochs": result.epochs, "thresholds": thresholds, **distill_metrics(result)}
    moved = ", ".join(f"{n} {_short(v['before'])} -> {_short(v['after'])}" for n, v in thresholds.items())
    return PassResult(metrics=metrics, notes=[f"thresholds ({config.window} window, W = {config.window_width:g}): "
                                              f"{moved}"])


def _short(value) -> str:
    if isinstance(value, list):
        return f"[{min(value):.3g}..{max(value):.3g}]"
    return f"{value:.4g}"


def requires(config: ThresholdConfig) -> dict[str, str | None]:
    return {"data": "the threshold pass needs data to measure accuracy: pass --data",
            "train_data": "the threshold pass trains: pass --train-data (or use --data digits)"}


THRESHOLD_PASS = PassSpec(
    name="threshold",
    config_class=ThresholdConfig,
    apply=apply,
    summary="Learn each neuron layer's threshold through the Gradient Penalty Window (SpQuant §4.4); keeps "
            "earlier quantization and pruning.",
    version="1",
    requires=requires,
)
