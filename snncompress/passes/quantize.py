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

from typing import Annotated, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator
from torch import nn

from snncompress.data.loading import split_validation
from snncompress.errors import ConfigError
from snncompress.models.fold import fold_batchnorm
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.models.neurons import RECURRENT_NEURONS
from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec
from snncompress.passes.calibration import DEFAULT_ITERS, AdaRoundSettings, adaround, supports_adaround
from snncompress.passes.kit import select_layers
from snncompress.passes.ptq_review import membrane_clipping, review
from snncompress.quant.membrane import membrane_quantizer, parse_membrane_quant
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.sim.constraints import FakeQuantWeights, LearnableThresholds, encode_weights
from snncompress.sim.distill import distill_metrics, frozen_teacher
from snncompress.sim.training import TrainConfig, train
from snncompress.state import get_state


def _no_grid(spec: str) -> str:
    return ("an fp32 membrane is not stored on a grid" if spec.strip().lower() == "fp32"
            else f"{spec} has one level per threshold")


class QuantizeConfig(PassConfig):
    """Config of the quantize pass; keys mirror ``snncompress quantize`` flags."""

    mode: Literal["ptq", "qat"] = Field("ptq", description="ptq (quantize as trained) or qat (fine-tune).")
    membrane_quant: str = Field("ternary", description="Stored membrane: ternary, int<k> (k-bit integer levels) "
                                                       "or fp32.")
    membrane_grid: Annotated[int, Field(ge=1, le=1 << 14)] | Literal["auto"] | None = Field(
        None, description="Integer membrane levels per threshold (ternary: 1; int<k> default 2^(k-2)); auto: "
                          "per neuron, the power of two that stores the membrane best on calibration data "
                          "(for learned per-neuron thresholds and leaks).")
    smoothness: float | None = Field(None, gt=0, description="SGS smoothness T_s (QAT); default: the quantizer's.")
    clip: float | Literal["auto"] | None = Field(
        None, description="Negative clipping boundary c of the membrane, in units of Vth (e.g. -3); auto: the "
                          "boundary an earlier 'analyze' step of the recipe recommends.")
    weight_quant: str = Field("pot4", description="pot<b>, apot<b>, int<b>, ternary, fixed<m>.<n> or fp32.")
    rounding: Literal["nearest", "truncate", "stochastic"] = Field(
        "nearest", description="Weight rounding (int and fixed point): nearest, truncate or stochastic.")
    neuron_quant: str | None = Field(None, description="fixed<m>.<n> for threshold and beta, or none.")
    epochs: int = Field(10, ge=1, le=1000, description="QAT epochs.")
    lr: float = Field(1e-3, gt=0, le=1.0, description="QAT learning rate (Adam).")
    loss: Literal["ce", "tet", "distill"] = Field(
        "ce", description="QAT loss: ce (spike counts), tet, or distill (no labels: match the output spike counts "
                          "of the model as it was before the pass).")
    distill_layers: float = Field(0.0, ge=0.0, le=1e4, description="QAT with loss distill: weight of a term that "
                                  "also matches each neuron layer's firing rates (0: output spike counts only).")
    distill_temperature: float = Field(
        0.0, ge=0.0, le=100.0,
        description="QAT with loss distill: softmax temperature of the teacher's and student's output spike counts (KL "
                    "divergence); 0: train on the teacher's predicted classes (measured best for QAT).")
    schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="QAT learning rate over the run: constant, or cosine-annealed to 0.")
    learn_threshold: bool = Field(
        True, description="QAT: learn each quantized neuron layer's threshold (SpQuant §4.4); the membrane "
                          "levels stay where they are, so the threshold may sit between them.")
    threshold_lr_scale: float = Field(10.0, gt=0, le=1e4,
                                      description="QAT: the thresholds' learning rate as a multiple of lr.")
    threshold_gradient: Literal["surrogate", "gpw"] = Field(
        "surrogate", description="QAT: the learned thresholds' gradient: surrogate (through the spike surrogate "
                                 "and the reset, as snnTorch's learn_threshold) or gpw (SpQuant Eq. 27: a sigmoid "
                                 "Gradient Penalty Window over the neurons that fired, W = 1; other windows: the "
                                 "threshold pass).")
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
    recurrent_weights: Literal["quantize", "fp32"] = Field(
        "quantize", description="RLeaky / RSynaptic all-to-all recurrent weights: quantize (the neuron layer's "
                                "weight_quant, calibrated like a synaptic layer in PTQ) or fp32.")
    ptq_drop_warning: float | None = Field(
        0.5, ge=0, le=100,
        description="PTQ: above this accuracy drop (points) say that the model is outside what PTQ keeps, with "
                    "the causes measured (membrane clipping per layer, weight error, recurrence), and advise "
                    "QAT; none: never.")
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

    @field_validator("membrane_grid")  # checked before anything runs (the quantizer checks it again)
    @classmethod
    def _grid_auto(cls, v: int | str | None, info: ValidationInfo) -> int | str | None:
        spec = info.data.get("membrane_quant")
        if v is not None and v != 1 and spec is not None and not spec.strip().lower().startswith("int"):
            raise ValueError(f"membrane_grid{' auto' if v == 'auto' else ''} applies to int<k> membranes; "
                             + _no_grid(spec))
        return v

    @field_validator("clip")
    @classmethod
    def _clip_fits(cls, v: float | str | None, info: ValidationInfo) -> float | str | None:
        spec = info.data.get("membrane_quant")
        grid = info.data.get("membrane_grid")
        if grid == "auto":
            if v is not None:
                raise ValueError("a clip is a level of one grid; membrane_grid auto picks one per neuron: drop one")
            grid = None
        if spec is not None and v != "auto":  # a bad spec is reported on its own field
            _check(lambda: membrane_quantizer(spec, v, info.data.get("smoothness"), grid))
        return v


def _check(fn) -> None:
    try:
        fn()
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def apply(model: nn.Module, config: QuantizeConfig, ctx: PassContext) -> PassResult:
    """Quantize ``model`` in place; see the module docstring.

    The pipeline measures accuracy before and after (``ctx.before`` and the next measurement); the
    pass itself runs only calibration (PTQ) or training (QAT), on the training data.
    """
    # distill: the teacher is the model as given, before anything below changes it
    teacher = frozen_teacher(model) if config.mode == "qat" and config.loss == "distill" else None
    folded = fold_batchnorm(model)  # Conv/Linear + BatchNorm -> one layer, so the codes include the BatchNorm
    layers = select_layers(model, config, ("synaptic", "neuron"))
    syn = [(s.name, s.module) for s in layers if s.kind == "synaptic"]
    neurons = [(s.name, s.module) for s in layers if s.kind == "neuron"]
    syn += recurrent_layers(neurons, config)
    if not neurons and config.membrane_quant != "fp32":
        raise ConfigError("the model has no neuron layers to quantize (check targets)")
    if config.mode == "qat" and ctx.train_data is None:
        raise ConfigError("QAT needs training data: pass --train-data (or use --data digits)")
    if ctx.data is None and ctx.train_data is None:
        raise ConfigError("the quantize pass needs data: pass --data")
    clip = _resolve_clip(config, ctx)
    weight_bits_before = _weight_bits(model, syn)
    auto_grid = _install_membrane(model, neurons, config, clip)
    metrics: dict = {"mode": config.mode, "batchnorm_folded": folded}
    if auto_grid:  # before the weights: their calibration sees the membrane levels they will run with
        from snncompress.passes.membrane_grid import calibrate_units

        metrics["membrane_grid_auto"] = calibrate_units(
            model, auto_grid, ctx.train_data if ctx.train_data is not None else ctx.data, config.calibration_samples,
            ctx.seed)
    if clip is not None and config.clip == "auto":
        metrics["clip"] = clip
    notes: list[str] = [f"folded BatchNorm into the layer before it: {', '.join(folded)}"] if folded else []
    if config.clip == "auto":
        notes.append(f"clip: auto -> {clip:g} x Vth (suggested by an earlier pass)")
    if config.mode == "qat":
        metrics.update(_qat(model, syn, neurons, config, ctx, teacher))
        if "calibration" in config.model_fields_set and config.calibration != "none":
            notes.append(f"calibration '{config.calibration}' is for PTQ; QAT learns the weights (ignored)")
        _convert_weights(model, syn, config, ctx.seed)
    else:
        metrics["calibration"] = _calibrate(model, syn, config, ctx, notes)
    _convert_neuron_params(model, neurons, config, ctx.seed)
    if config.mode == "ptq" and config.ptq_drop_warning is not None:
        # measured here, where the model is at hand; the review reads it once the drop is known
        metrics["membrane_clipping"] = membrane_clipping(
            model, ctx.train_data if ctx.train_data is not None else ctx.data, config.calibration_samples, ctx.seed)
    if config.integer_only:  # after every value is quantized: it rounds what float32 would otherwise round
        from snncompress.integer.constrain import make_float32_exact

        metrics["integer_only"] = make_float32_exact(model, ctx.data if ctx.data is not None else ctx.train_data)
    metrics.update(
        weight_bits_before=weight_bits_before,
        weight_bits_after=_weight_bits(model, syn),
        layers_quantized=[n for n, _ in syn if f"{n}.weight" in get_state(model).tensors],
        neuron_layers_quantized=[n for n, _ in neurons if "membrane" in get_state(model).neurons.get(n, {})],
    )
    return PassResult(metrics=metrics, notes=[
        f"weights {metrics['weight_bits_before'] / 8192:.1f} KiB -> {metrics['weight_bits_after'] / 8192:.1f} KiB",
        *notes,
    ])


def _resolve_clip(config: QuantizeConfig, ctx: PassContext) -> float | None:
    """The clipping boundary: as given, or ``auto``: the one an earlier pass (``analyze``) suggested."""
    if config.clip != "auto":
        return config.clip
    clip = ctx.suggestion("clip")
    if clip is None:
        raise ConfigError("clip: auto takes the clipping boundary an earlier pass suggests (an 'analyze' step "
                          "before 'quantize' in the recipe), and no earlier pass suggested one")
    return float(clip)


def _install_membrane(model, neurons, config: QuantizeConfig, clip: float | None) -> list[str]:
    """Install each neuron layer's membrane quantizer; returns the layers whose grid is ``auto`` (installed at
    the default grid, for :func:`~snncompress.passes.membrane_grid.calibrate_units` to choose)."""
    auto = []
    for name, _ in neurons:
        layer_cfg = config.for_layer(name)
        layer_clip = clip if layer_cfg.clip == "auto" else layer_cfg.clip
        grid = None if layer_cfg.membrane_grid == "auto" else layer_cfg.membrane_grid
        quantizer, grid = membrane_quantizer(layer_cfg.membrane_quant, layer_clip, layer_cfg.smoothness, grid)
        if quantizer is not None:
            install_membrane_quantizer(model, name, quantizer, grid)
            if layer_cfg.membrane_grid == "auto":
                auto.append(name)
    return auto


RECURRENT_SUFFIX = ".recurrent"


def recurrent_layers(neurons, config: QuantizeConfig) -> list[tuple[str, nn.Module]]:
    """The all-to-all recurrent ``Linear`` of each selected RLeaky / RSynaptic layer, as ``(f"{neuron}.recurrent",
    module)``: weights like a synaptic layer's (its input is the layer's own spikes of the step before), which
    the neuron layer's config quantizes unless ``recurrent_weights`` is fp32. A one-to-one ``V`` is one weight
    per neuron, a neuron parameter (``neuron_quant``)."""
    out = []
    for name, module in neurons:
        if type(module).__name__ not in RECURRENT_NEURONS or not getattr(module, "all_to_all", False):
            continue
        if config.for_layer(name).recurrent_weights == "quantize" and isinstance(module.recurrent, nn.Linear):
            out.append((name + RECURRENT_SUFFIX, module.recurrent))
    return out


def layer_config(model: nn.Module, config: QuantizeConfig, layer: str) -> QuantizeConfig:
    """The config of a synaptic layer; a recurrent ``Linear`` (``<neuron>.recurrent``) takes its neuron's."""
    owner = layer.removesuffix(RECURRENT_SUFFIX)
    if owner != layer and type(model.get_submodule(owner)).__name__ in RECURRENT_NEURONS:
        return config.for_layer(owner)
    return config.for_layer(layer)


def _scheme(model: nn.Module, config: QuantizeConfig, layer: str):
    layer_cfg = layer_config(model, config, layer)
    return parse_weight_scheme(layer_cfg.weight_quant, rounding=layer_cfg.rounding)


def _qat(model, syn, neurons, config: QuantizeConfig, ctx: PassContext, teacher: nn.Module | None = None) -> dict:
    """Fine-tune with fake-quantized weights and learnable thresholds (training constraints); any earlier
    compression (pruning masks, other layers' codes) is kept by the training loop itself."""
    state = get_state(model)
    fake_quant = FakeQuantWeights({f"{n}.weight": _scheme(model, config, n) for n, _ in syn}, encode=False)
    learnable = [n for n, _ in neurons
                 if config.for_layer(n).learn_threshold and "membrane" in state.neurons.get(n, {})]
    if config.threshold_gradient == "gpw":
        from snncompress.sim.thresholds import GPWThresholds

        thresholds = GPWThresholds(learnable, lr_scale=config.threshold_lr_scale)
    else:
        thresholds = LearnableThresholds(learnable, lr_scale=config.threshold_lr_scale)
    # the best epoch is chosen on the training data (or a part held out of it), never on the evaluation data
    parts = split_validation(ctx.train_data, config.validation_split, ctx.seed) if config.validation_split else None
    train_part, val_part = parts if parts is not None else (ctx.train_data, ctx.train_data)
    validation = val_part.name if parts is not None else "the training data" + (
        " (too small to split)" if config.validation_split else "")
    train_config = TrainConfig(epochs=config.epochs, lr=config.lr, loss=config.loss, seed=ctx.seed,
                               schedule=config.schedule, distill_layers=config.distill_layers,
                               distill_temperature=config.distill_temperature)
    result = train(model, train_part, val_part, train_config, show_progress=ctx.show_progress,
                   description="QAT", constraints=[fake_quant, thresholds], teacher=teacher)
    metrics = {**result.best_metrics(), "validation": validation, "epochs": result.epochs,
               **distill_metrics(result)}
    if thresholds.learned:
        metrics["thresholds"] = {n: {"before": thresholds.before[n], "after": thresholds.after[n]}
                                 for n in thresholds.learned}
    return metrics


def learnable_thresholds(model, neurons, config: QuantizeConfig) -> list[str]:
    """Make the thresholds of the quantized-membrane layers that ask for it parameters (what QAT trains).

    The benchmark times a QAT step as written out by hand; QAT itself uses
    :class:`~snncompress.sim.constraints.LearnableThresholds`.
    """
    state = get_state(model)
    names = [n for n, _ in neurons if config.for_layer(n).learn_threshold and "membrane" in state.neurons.get(n, {})]
    constraint = LearnableThresholds(names)
    constraint.attach(model)
    return constraint.learned


def _convert_weights(model, syn, config: QuantizeConfig, seed: int) -> None:
    schemes = {f"{name}.weight": _scheme(model, config, name) for name, _ in syn}
    encode_weights(model, {k: v for k, v in schemes.items() if not v.is_identity}, seed)


def _calibrate(model, syn, config: QuantizeConfig, ctx: PassContext, notes: list[str]) -> dict:
    """PTQ weights: adaptive rounding for the layers that ask for it, the scheme's rounding for the rest.

    The other layers are quantized first (in the same order and with the same draws as without
    calibration), so that each calibrated layer sees the inputs of the quantized model.
    """
    chosen, other_rounding = [], []
    for name, module in syn:
        layer_cfg = layer_config(model, config, name)
        scheme = _scheme(model, config, name)
        if layer_cfg.calibration != "adaround" or not supports_adaround(scheme):
            continue
        if layer_cfg.rounding != "nearest":
            other_rounding.append(name)  # the user asked for this rounding: keep it
            continue
        chosen.append((name, module, scheme))
    if other_rounding:
        notes.append(f"adaround skipped for {', '.join(other_rounding)}: "
                     f"{layer_config(model, config, other_rounding[0]).rounding} rounding was asked for")
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
    notes.append(f"adaround: {used}/{len(layers)} layers re-rounded on {result.samples} {source} samples; "
                 f"mean relative output error {before:.4f} -> {after:.4f}")
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


def requires(config: QuantizeConfig) -> dict[str, str | None]:
    """QAT trains on the training data; PTQ calibrates on it (or on the evaluation data)."""
    needs: dict[str, str | None] = {"data": "the quantize pass needs data to measure accuracy: pass --data"}
    if config.mode == "qat":
        needs["train_data"] = "QAT needs training data: pass --train-data (or use --data digits)"
    return needs


def provides(config: QuantizeConfig) -> set[str]:
    spec = config.membrane_quant.strip().lower()
    if spec == "fp32":
        return set()
    return {"quantized_membrane", "ternary_membrane"} if spec == "ternary" else {"quantized_membrane"}


QUANTIZE_PASS = PassSpec(
    name="quantize",
    config_class=QuantizeConfig,
    apply=apply,
    summary="Integer-only membrane (ternary / k-bit) and PoT / APoT / int / ternary / fixed-point weights; PTQ or QAT.",
    version="1",
    requires=requires,
    provides=provides,
    review=review,
)
