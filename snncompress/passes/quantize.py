"""The quantize pass: integer-only membrane, low-bit weights, fixed-point neuron parameters; PTQ or QAT.

* Membrane (SpQuant §4.2.1): the stored, post-reset membrane on integer levels in units of the
  layer's threshold, no dequantization scale; ternary {-1, 0, +1} by default. QAT back-propagates
  through the staircase with Stacked Gradient Surrogation.
* Weights (SpQuant §4.2.2, tinySNN §2.3): power-of-two, additive power-of-two, per-channel
  integer, ternary or fixed point Q(m.n) with a rounding scheme.
* Neuron parameters (tinySNN qWN): threshold and beta in fixed point.
* PTQ quantizes the trained model as it is, choosing each weight's rounding (up or down) on
  calibration data by default (AdaRound, :mod:`snncompress.passes.calibration`). QAT fine-tunes
  with fake quantization (Adam, CE on spike counts or TET), keeps the best epoch (by accuracy on the
  training data, or on a held-out part of it: ``validation_split``), then converts.
  Either way the model ends holding exactly the values its stored codes decode to.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import nn
from torch.nn.utils import parametrize

from snncompress.data.loading import split_validation
from snncompress.errors import ConfigError
from snncompress.sim.evaluate import evaluate
from snncompress.models.fold import fold_batchnorm
from snncompress.models.layers import SYNAPTIC_TYPES
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.models.neurons import neuron_layers
from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec, check_targets
from snncompress.passes.calibration import DEFAULT_ITERS, AdaRoundSettings, adaround, supports_adaround
from snncompress.quant.membrane import parse_membrane_quant
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.state import get_state
from snncompress.sim.training import TrainConfig, train


class QuantizeConfig(PassConfig):
    """Config of the quantize pass; keys mirror ``snncompress quantize`` flags."""

    mode: Literal["ptq", "qat"] = "ptq"
    membrane_quant: str = Field("ternary", description="ternary, int<k> or fp32.")
    membrane_grid: int | None = Field(
        None, ge=1, le=1 << 14,
        description="Integer membrane levels per threshold (ternary: 1; int<k> default 2^(k-2)).")
    smoothness: float | None = Field(None, gt=0, description="SGS smoothness T_s (QAT); default: the quantizer's.")
    clip: float | None = Field(None, description="Negative clipping boundary c of the membrane, in units of Vth.")
    weight_quant: str = Field("pot4", description="pot<b>, apot<b>, int<b>, ternary, fixed<m>.<n> or fp32.")
    rounding: Literal["nearest", "truncate", "stochastic"] = "nearest"
    neuron_quant: str | None = Field(None, description="fixed<m>.<n> for threshold and beta, or none.")
    epochs: int = Field(10, ge=1, le=1000, description="QAT epochs.")
    lr: float = Field(1e-3, gt=0, le=1.0, description="QAT learning rate (Adam).")
    loss: Literal["ce", "tet"] = "ce"
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="QAT learning rate over the run: constant, or cosine-annealed to 0.")
    learn_threshold: bool = Field(
        True, description="QAT: learn each quantized neuron layer's threshold (SpQuant §4.4); the membrane "
                          "levels stay where they are, so the threshold may sit between them.")
    threshold_lr_scale: float = Field(10.0, gt=0, le=1e4,
                                      description="QAT: the thresholds' learning rate as a multiple of lr.")
    validation_split: float = Field(
        0.0, ge=0.0, le=0.5,
        description="QAT: the fraction of the training data held out to choose the best epoch; 0: train on all "
                    "of it and choose the epoch by its accuracy on the training data (a tenth of a small data set "
                    "is too few samples to tell epochs apart, and QAT is short enough not to over-fit).")
    calibration: Literal["none", "adaround"] = Field(
        "adaround", description="PTQ: choose each weight's rounding (up or down) to keep each layer's output on "
                                "calibration data (AdaRound); none: the scheme's own rounding. QAT ignores it.")
    calibration_samples: int = Field(
        256, ge=1, le=1_000_000,
        description="Calibration samples, drawn from the training data (the evaluation data when there is none).")
    calibration_iters: int = Field(DEFAULT_ITERS, ge=1, le=100_000,
                                   description="Adam steps per layer of the rounding calibration.")
    integer_only: bool = Field(
        False, description="Round biases, scales and neuron parameters onto grids float32 holds exactly, so the "
                           "torch model and the integer-only reference (snncompress verify) agree by construction.")

    @field_validator("weight_quant")
    @classmethod
    def _weight(cls, v: str) -> str:
        _check(lambda: parse_weight_scheme(v))
        return v

    @field_validator("membrane_quant")
    @classmethod
    def _membrane(cls, v: str) -> str:
        _check(lambda: parse_membrane_quant(v))
        return v

    @field_validator("neuron_quant")
    @classmethod
    def _neuron(cls, v: str | None) -> str | None:
        if v is not None and v not in ("fp32", "none"):
            if not v.startswith("fixed"):
                raise ValueError(f"neuron_quant must be fixed<m>.<n> (e.g. fixed2.6), got '{v}'")
            _check(lambda: parse_weight_scheme(v))
        return None if v in ("fp32", "none") else v

    @field_validator("clip")
    @classmethod
    def _clip_fits(cls, v: float | None, info: ValidationInfo) -> float | None:
        spec = info.data.get("membrane_quant")
        if spec is not None:  # a bad spec is reported on its own field
            _check(lambda: membrane_quantizer(spec, v, info.data.get("smoothness"), info.data.get("membrane_grid")))
        return v


def default_grid(spec: str) -> int:
    """Levels per threshold: 1 for ternary (SpQuant), ``2^(k-2)`` for int<k> (int4: Vth/4 steps over
    [-2, 1.75] Vth; int8: Vth/64 steps over [-2, 2) Vth) -- our choice, configurable."""
    spec = spec.strip().lower()
    if spec.startswith("int") and spec[3:].isdigit():
        return max(1, 1 << max(0, int(spec[3:]) - 2))
    return 1


def membrane_quantizer(spec: str, clip: float | None, smoothness: float | None, grid: int | None = None):
    """The membrane quantizer for a spec (None for fp32) and its grid (levels per threshold).

    Raises:
        ConfigError: a bad spec, a grid given for ternary / fp32, or a clip (in units of Vth) that is
            not a level of the grid inside the representable range.
    """
    spec_l = spec.strip().lower()
    if grid is not None and grid != 1 and not spec_l.startswith("int"):
        raise ConfigError(f"membrane_grid applies to int<k> membranes; {spec} has one level per threshold")
    grid = grid or default_grid(spec_l)
    level_clip = None
    if clip is not None:
        if spec_l == "fp32":
            raise ConfigError("a membrane clip needs quantized levels (ternary or int<k>)")
        bits = 2 if spec_l == "ternary" else int(spec_l[3:]) if spec_l[3:].isdigit() else None
        lowest = -1.0 if spec_l == "ternary" else (-(1 << (bits - 1)) / grid if bits else None)
        if lowest is not None and not lowest <= clip < 0:
            raise ConfigError(f"clip {clip:g} x Vth does not fit {spec_l} at {grid} levels per threshold: "
                              f"use a value in {lowest:g} .. {-1 / grid:g}")
        level_clip = clip * grid
        if level_clip != int(level_clip):
            raise ConfigError(f"clip {clip:g} x Vth is not on the membrane grid (steps of Vth/{grid})")
        level_clip = int(level_clip)
    kwargs = {"smoothness": smoothness} if smoothness is not None else {}
    quantizer = parse_membrane_quant(spec, clip=level_clip, **kwargs)
    return quantizer, grid


def _check(fn) -> None:
    try:
        fn()
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def synaptic_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and conv layers outside neurons (RLeaky's recurrent weights are its own)."""
    neuron_names = [n for n, _ in neuron_layers(model)]
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, SYNAPTIC_TYPES) and not any(n.startswith(p + ".") for p in neuron_names)]


class _FakeQuant(nn.Module):
    """Parametrization: the weight as its scheme quantizes it, straight-through gradient."""

    def __init__(self, scheme):
        super().__init__()
        self.scheme = scheme

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.scheme.fake_quant(w)


def apply(model: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """Quantize ``model`` in place; see the module docstring."""
    folded = fold_batchnorm(model)  # Conv/Linear + BatchNorm -> one layer, so the codes include the BatchNorm
    syn = [(n, m) for n, m in synaptic_layers(model) if config.applies_to(n)]
    neurons = [(n, m) for n, m in neuron_layers(model) if config.applies_to(n)]
    check_targets(model, config, [n for n, _ in synaptic_layers(model)] + [n for n, _ in neuron_layers(model)])
    if not neurons and config.membrane_quant != "fp32":
        raise ConfigError("the model has no neuron layers to quantize (check targets)")
    if config.mode == "qat" and ctx.train_data is None:
        raise ConfigError("QAT needs training data: pass --train-data (or use --data digits)")
    if ctx.data is None:
        raise ConfigError("the quantize pass needs data to measure accuracy: pass --data")
    before = ctx.measured.get("accuracy")
    if before is None:
        before = evaluate(model, ctx.data, show_progress=ctx.show_progress, description="fp32 accuracy").accuracy
    weight_bits_before = _weight_bits(model, syn)
    _install_membrane(model, neurons, config)
    metrics: dict = {"accuracy_before": before, "mode": config.mode, "batchnorm_folded": folded}
    notes: list[str] = [f"folded BatchNorm into the layer before it: {', '.join(folded)}"] if folded else []
    if config.mode == "qat":
        metrics.update(_qat(model, syn, neurons, config, ctx))
        if "calibration" in config.model_fields_set and config.calibration != "none":
            notes.append(f"calibration '{config.calibration}' is for PTQ; QAT learns the weights (ignored)")
        _convert_weights(model, syn, config, ctx.seed)
    else:
        metrics["calibration"] = _calibrate(model, syn, config, ctx, notes)
    _convert_neuron_params(model, neurons, config, ctx.seed)
    if config.integer_only:  # after every value is quantized: it rounds what float32 would otherwise round
        from snncompress.integer.constrain import make_float32_exact

        metrics["integer_only"] = make_float32_exact(model, ctx.data)
    after = evaluate(model, ctx.data, show_progress=ctx.show_progress, description="quantized accuracy").accuracy
    ctx.measured["accuracy"] = after
    metrics.update(
        accuracy_after=after,
        accuracy_drop=before - after,
        weight_bits_before=weight_bits_before,
        weight_bits_after=_weight_bits(model, syn),
        layers_quantized=[n for n, _ in syn if f"{n}.weight" in get_state(model).tensors],
        neuron_layers_quantized=[n for n, _ in neurons if "membrane" in get_state(model).neurons.get(n, {})],
    )
    return PassResult(metrics=metrics, notes=[
        f"accuracy {before:.2f}% -> {after:.2f}% ({after - before:+.2f} points)",
        f"weights {metrics['weight_bits_before'] / 8192:.1f} KiB -> {metrics['weight_bits_after'] / 8192:.1f} KiB",
        *notes,
    ])


def _install_membrane(model, neurons, config: QuantizeConfig) -> None:
    for name, _ in neurons:
        layer_cfg = config.for_layer(name)
        quantizer, grid = membrane_quantizer(layer_cfg.membrane_quant, layer_cfg.clip, layer_cfg.smoothness,
                                             layer_cfg.membrane_grid)
        if quantizer is not None:
            install_membrane_quantizer(model, name, quantizer, grid)


def _scheme(config: QuantizeConfig, layer: str):
    layer_cfg = config.for_layer(layer)
    return parse_weight_scheme(layer_cfg.weight_quant, rounding=layer_cfg.rounding)


def _qat(model, syn, neurons, config: QuantizeConfig, ctx: PassContext) -> dict:
    for name, module in syn:
        scheme = _scheme(config, name)
        if not scheme.is_identity:
            parametrize.register_parametrization(module, "weight", _FakeQuant(scheme))
    learned = learnable_thresholds(model, neurons, config)
    before = {name: _threshold_value(model.get_submodule(name)) for name in learned}
    # the best epoch is chosen on the training data (or a part held out of it), never on the evaluation data
    parts = split_validation(ctx.train_data, config.validation_split, ctx.seed) if config.validation_split else None
    train_part, val_part = parts if parts is not None else (ctx.train_data, ctx.train_data)
    validation = val_part.name if parts is not None else "the training data" + (
        " (too small to split)" if config.validation_split else "")
    train_config = TrainConfig(epochs=config.epochs, lr=config.lr, loss=config.loss, seed=ctx.seed,
                               schedule=config.schedule,
                               lr_scale={f"{n}.threshold": config.threshold_lr_scale for n in learned})
    try:
        result = train(model, train_part, val_part, train_config, show_progress=ctx.show_progress,
                       description="QAT", step_context=parametrize.cached)  # fake-quant once per step
    finally:
        for _, module in syn:
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for name in learned:  # back to a buffer: the architecture stays as the user wrote it
            module = model.get_submodule(name)
            value = module.threshold.detach().clone()
            del module.threshold
            module.register_buffer("threshold", value)
    metrics = {"best_epoch": result.best_epoch, "best_val_accuracy": result.best_accuracy,
               "validation": validation,
               "epochs": result.epochs}
    if learned:
        metrics["thresholds"] = {n: {"before": before[n], "after": _threshold_value(model.get_submodule(n))}
                                 for n in learned}
    return metrics


def learnable_thresholds(model, neurons, config: QuantizeConfig) -> list[str]:
    """Make the thresholds of the quantized-membrane layers that ask for it parameters (for QAT)."""
    state = get_state(model)
    learned = []
    for name, module in neurons:
        if not config.for_layer(name).learn_threshold or "membrane" not in state.neurons.get(name, {}):
            continue
        if isinstance(module.threshold, nn.Parameter):
            continue  # already learned (snnTorch learn_threshold=True): trained with everything else
        value = module.threshold.detach().clone()
        del module.threshold
        module.threshold = nn.Parameter(value)
        learned.append(name)
    return learned


def _threshold_value(module) -> float | list:
    value = module.threshold.detach()
    return round(float(value), 6) if value.numel() == 1 else [round(float(v), 6) for v in value.reshape(-1)]


def _convert_weights(model, syn, config: QuantizeConfig, seed: int) -> None:
    state = get_state(model)
    gen = torch.Generator().manual_seed(seed)
    for name, module in syn:
        scheme = _scheme(config, name)
        if scheme.is_identity:
            continue
        with torch.no_grad():
            enc = scheme.encode(module.weight.detach(), generator=gen)
            module.weight.copy_(scheme.decode(enc).reshape(module.weight.shape))
        state.tensors[f"{name}.weight"] = enc


def _calibrate(model, syn, config: QuantizeConfig, ctx: PassContext, notes: list[str]) -> dict:
    """PTQ weights: adaptive rounding for the layers that ask for it, the scheme's rounding for the rest.

    The other layers are quantized first (in the same order and with the same draws as without
    calibration), so that each calibrated layer sees the inputs of the quantized model.
    """
    chosen, other_rounding = [], []
    for name, module in syn:
        layer_cfg = config.for_layer(name)
        scheme = _scheme(config, name)
        if layer_cfg.calibration != "adaround" or not supports_adaround(scheme):
            continue
        if layer_cfg.rounding != "nearest":
            other_rounding.append(name)  # the user asked for this rounding: keep it
            continue
        chosen.append((name, module, scheme))
    if other_rounding:
        notes.append(f"adaround skipped for {', '.join(other_rounding)}: "
                     f"{config.for_layer(other_rounding[0]).rounding} rounding was asked for")
    chosen_names = {n for n, _, _ in chosen}
    _convert_weights(model, [(n, m) for n, m in syn if n not in chosen_names], config, ctx.seed)
    if not chosen:
        return {"method": "none"}
    data, source = (ctx.train_data, "train") if ctx.train_data is not None else (ctx.data, "evaluation")
    if source == "evaluation":
        notes.append("adaround calibrated on the evaluation data (no training data given), so the accuracy "
                     "after is measured on data the rounding was fitted to; pass --train-data")
    settings = AdaRoundSettings(samples=config.calibration_samples, iters=config.calibration_iters, seed=ctx.seed)
    state = get_state(model)
    result = adaround(model, chosen, data, settings, masks=state.masks, show_progress=ctx.show_progress)
    for name, enc in result.encoded.items():
        state.tensors[f"{name}.weight"] = enc
    if result.unreached:
        _convert_weights(model, [(n, m) for n, m, _ in chosen if n in result.unreached], config, ctx.seed)
        notes.append(f"adaround: {', '.join(result.unreached)} not reached by the data (default rounding)")
    layers = result.layers
    used = sum(r.used == "adaround" for r in layers)
    before = sum(r.error_before for r in layers) / max(len(layers), 1)
    after = sum(r.error_after for r in layers) / max(len(layers), 1)
    notes.append(f"adaround: {used}/{len(layers)} layers re-rounded on {result.samples} {source} samples in "
                 f"{result.seconds:.1f} s; mean relative output error {before:.4f} -> {after:.4f}")
    return {"method": "adaround", "data": source, "iters": config.calibration_iters, **result.to_dict()}


def _convert_neuron_params(model, neurons, config: QuantizeConfig, seed: int) -> None:
    state = get_state(model)
    gen = torch.Generator().manual_seed(seed)
    for name, module in neurons:
        fmt = config.for_layer(name).neuron_quant
        if fmt is None:
            continue
        scheme = parse_weight_scheme(fmt, rounding=config.for_layer(name).rounding)
        for pname in ("threshold", "beta"):
            tensor = getattr(module, pname)
            with torch.no_grad():
                enc = scheme.encode(tensor.detach().reshape(-1) if tensor.dim() == 0 else tensor.detach(),
                                    generator=gen)
                tensor.copy_(scheme.decode(enc).reshape(tensor.shape))
            state.tensors[f"{name}.{pname}"] = enc


def _weight_bits(model, syn) -> int:
    state = get_state(model)
    total = 0
    for name, module in syn:
        enc = state.tensors.get(f"{name}.weight")
        total += module.weight.numel() * (enc.bits if enc is not None else 32)
    return total


QUANTIZE_PASS = PassSpec(
    name="quantize",
    config_class=QuantizeConfig,
    apply=apply,
    summary="Integer-only membrane (ternary / k-bit) and PoT / APoT / int / ternary / fixed-point weights; PTQ or QAT.",
    version="1",
    needs_data=True,
)
