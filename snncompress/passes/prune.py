"""The prune pass: weight pruning (Schaefer et al.), binary membrane and spatial pruning (SpQuant §4.3).

* Weights: unstructured magnitude, structured (whole output neurons / channels, their bias with
  them) or N:M masks (:mod:`snncompress.passes.prune_masks`), one-shot or gradual. The masks go to
  the compression state (``state.masks``, ``True`` keeps); the file stores them packed and the
  hardware report counts them (sparse formats, skipped synaptic ops).
* One-shot prunes to the target at once, then fine-tunes ``epochs`` epochs (``0``: no fine-tuning);
  any fine-tuning keeps the masks (:class:`~snncompress.sim.constraints.KeepMasks`, from the state).
* Gradual raises the sparsity after every optimizer step on Zhu & Gupta's cubic schedule
  (:class:`GradualPruning`) over the first two thirds of the epochs and fine-tunes the rest at the
  target, keeping the best of those epochs (an epoch during the ramp is never kept: its weights do
  not fit the final mask).
* Cumulative: pruning a quantized weight re-encodes it with its stored scheme under the mask (the
  fine-tuning fake-quantizes it with that scheme); a later QAT keeps the masks. So prune-then-quantize
  and quantize-then-prune both keep both.
* Joint: ``weight_quant`` fake-quantizes the pruned layers' weights in the same fine-tuning and
  stores their codes at the end (prune and quantization-aware training in one step). The other way
  round -- ``prune`` with ``epochs: 0`` then a QAT ``quantize`` -- is also one fine-tuning.
* Binary membrane (Eq. 19-20): on a ternary membrane, the -1 level is silenced (levels {0, +1}: 1 bit
  stored instead of 2); no fine-tuning.
* Spatial pruning with membrane importance (Eq. 21-22): ``spatial: P`` masks, per step and sample,
  the fraction P of each hidden neuron layer's least important membrane values before accumulation
  (:mod:`snncompress.models.spatial`); fine-tuned like weight pruning when ``epochs`` > 0. The
  measured synaptic ops per sample before (``ctx.before``) and after are reported.
* Channel masking with membrane prior (Eq. 23, Fig. 3): ``channel_threshold: TH`` gates each hidden neuron
  layer's channels (a Linear-fed layer: each neuron) from its pooled membrane prior with a point-wise gate
  and a softmax, dropping a channel when its keep probability is below TH
  (:mod:`snncompress.models.channel_gate`); the gate trains in the fine-tuning (straight-through, with a
  sparsity cost ``channel_cost``). Its parameters are stored in the file; its operations are reported
  next to the synaptic operations it saves.

Reported: the configured ratio, the weight sparsity of the masks and the *measured* fraction of
synaptic operations skipped on the evaluation data (the connections from active inputs that the
masks remove, counted over one pass -- activity-weighted, so it differs from the weight sparsity
when some inputs fire more than others).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from snncompress.errors import ConfigError
from snncompress.models.channel_gate import counted, gate_ops, install_channel_gate
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.models.spatial import importance_ops, install_spatial_pruning
from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec
from snncompress.passes.kit import select_layers
from snncompress.passes.prune_masks import cubic_sparsity, layer_masks
from snncompress.quant.membrane import MembraneQuantizer
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.sim.constraints import FakeQuantWeights, KeepMasks, encode_weights, raw_parameter
from snncompress.sim.distill import distill_metrics, frozen_teacher
from snncompress.sim.training import TrainConfig, train
from snncompress.state import get_state


def parse_nm(text: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``.

    Raises:
        ValueError: not ``N:M`` with integers ``0 < N < M``.
    """
    parts = str(text).strip().split(":")
    try:
        n, m = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"weights_nm must be N:M with integers, e.g. 2:4, got '{text}'") from None
    if not 0 < n < m:
        raise ValueError(f"weights_nm {text}: N:M needs 0 < N < M (N kept of every M)")
    return n, m


#: the keys that ask for some pruning; with none of them the config prunes DEFAULT_SPARSITY unstructured
ASKED = ("weights_unstructured", "weights_structured", "weights_nm", "binary_membrane", "spatial",
         "channel_threshold")
DEFAULT_SPARSITY = 0.5
CHANNEL_COST = 0.5


class PruneConfig(PassConfig):
    """Config of the prune pass; keys mirror ``snncompress prune`` flags."""

    weights_unstructured: float | None = Field(
        None, ge=0.0, lt=1.0, description="Unstructured magnitude pruning: the fraction of each layer's weights "
                                          "set to zero, in [0, 1); 0.5 when no other pruning is asked for.")
    weights_structured: float | None = Field(
        None, ge=0.0, lt=1.0, description="Structured pruning: the fraction of each layer's output neurons / "
                                          "channels removed (lowest L2 norm; their bias too), in [0, 1). The "
                                          "last layer (its outputs are the classes) is left out unless named in "
                                          "targets.")
    weights_nm: str | None = Field(None, description="N:M pruning: keep N of every M consecutive weights along "
                                                     "the fan-in, e.g. 2:4.")
    binary_membrane: bool = Field(
        False, description="Silence the -1 level of a ternary membrane (SpQuant Eq. 19-20): 1 bit instead of 2; "
                           "no fine-tuning.")
    spatial: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="Spatial pruning with membrane importance (SpQuant Eq. 21-22): at every step, mask this fraction "
                    "of each hidden neuron layer's least important membrane values before accumulation (paper 0.35).")
    channel_threshold: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="Channel masking with membrane prior (SpQuant Eq. 23): at every step, drop the channels (a "
                    "Linear-fed layer: the neurons) of each hidden neuron layer whose keep probability -- pooled "
                    "membrane -> point-wise gate -> softmax -- is below this threshold, in (0, 1) (paper 0.47). "
                    "The gate trains in the fine-tuning; its parameters and operations are stored and counted.")
    channel_cost: float = Field(
        CHANNEL_COST, ge=0.0, le=100.0,
        description="Channel masking: weight of the gate's sparsity cost (the mean keep probability) in the "
                    "fine-tuning loss; higher drops more channels (0: only the task loss).")
    schedule: Literal["oneshot", "gradual"] = Field(
        "oneshot", description="oneshot: prune to the target, then fine-tune; gradual: raise the sparsity after "
                               "every step on a cubic schedule over the fine-tuning.")
    epochs: int = Field(3, ge=0, le=1000, description="Fine-tuning epochs (0: none; gradual needs at least 1).")
    lr: float = Field(1e-3, gt=0, le=1.0, description="Fine-tuning learning rate (Adam).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="Fine-tuning learning rate over the run: constant, or cosine-annealed to 0.")
    loss: Literal["ce", "tet", "distill"] = Field(
        "ce", description="Fine-tuning loss: ce (spike counts), tet, or distill (no labels: match the output spike "
                          "counts of the model as it was before the pass).")
    distill_layers: float = Field(0.0, ge=0.0, le=1e4, description="Fine-tuning with loss distill: weight of a term "
                                  "that also matches each neuron layer's firing rates (0: output spike counts only).")
    distill_temperature: float = Field(
        0.0, ge=0.0, le=100.0,
        description="Fine-tuning with loss distill: softmax temperature of the teacher's and student's output "
                    "spike counts (KL divergence); 0: train on the teacher's predicted classes (measured best for "
                    "QAT).")
    weight_quant: str | None = Field(
        None, description="Joint pruning and quantization: fake-quantize the pruned layers' weights with this "
                          "scheme (pot4, int4, ...) during the fine-tuning and store their codes.")
    shrink: bool = Field(
        False, description="After structured pruning, remove the pruned outputs for good: a smaller dense "
                           "nn.Sequential (the next layer's inputs removed too), no masks (the classes stay).")

    @field_validator("weights_nm")
    @classmethod
    def _nm(cls, v: str | None) -> str | None:
        if v is not None:
            parse_nm(v)
        return v

    @field_validator("weight_quant")
    @classmethod
    def _weight(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            parse_weight_scheme(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_method(cls, data):
        """Nothing asked for (the pass's default config): 50 % unstructured magnitude pruning.

        ``spatial: 0`` is asked for (it masks nothing), and a channel cost without a channel threshold is
        refused rather than read as "nothing asked" (it would prune half the weights instead).
        """
        if not isinstance(data, dict):
            return data
        if data.get("channel_threshold") is None and data.get("channel_cost", CHANNEL_COST) != CHANNEL_COST:
            raise ValueError("channel_cost weights a channel gate's sparsity term: it needs channel_threshold")
        if not any(data.get(k) is not None and data.get(k) is not False for k in ASKED):
            return {**data, "weights_unstructured": DEFAULT_SPARSITY}
        return data

    @model_validator(mode="after")
    def _one_method(self) -> PruneConfig:
        methods = ("weights_unstructured", "weights_structured", "weights_nm")
        given = [k for k in methods if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"choose one weight-pruning method, got {' and '.join(given)}")
        if self.schedule == "gradual":
            if self.weights_nm is not None:
                raise ValueError("the gradual schedule raises a ratio; N:M pruning is one-shot")
            if self.epochs < 1:
                raise ValueError("the gradual schedule prunes during fine-tuning: it needs epochs >= 1")
        if self.weight_quant is not None and not given:
            raise ValueError("weight_quant quantizes the pruned layers jointly: it needs a weight-pruning method")
        if self.shrink and (self.weights_structured is None or self.spatial is not None
                            or self.channel_threshold is not None):
            raise ValueError("shrink removes the outputs structured pruning masks: it needs weights_structured "
                             "(and no spatial pruning or channel masking, whose masks count each layer's neurons)")
        return self

    def method(self) -> tuple[str, float | tuple[int, int]] | None:
        """The weight-pruning method and its amount, or None."""
        if self.weights_unstructured is not None:
            return "unstructured", self.weights_unstructured
        if self.weights_structured is not None:
            return "structured", self.weights_structured
        if self.weights_nm is not None:
            return "nm", parse_nm(self.weights_nm)
        return None


class GradualPruning(KeepMasks):
    """A training constraint: the masks grow on the cubic schedule after each optimizer step.

    The mask of each weight is recomputed from the weights' magnitudes at the scheduled sparsity,
    never giving back what it pruned (the current mask is the ``keep`` of the next), and applied.
    At ``detach`` every layer is at its target and the masks are written to the model's state.

    Args:
        layers: ``{layer: (module, method, final amount)}``.
        keep: masks already in force (earlier pruning), by state-dict name.
        steps: optimizer steps over which the sparsity ramps up to the target.
    """

    name = "gradual-pruning"

    def __init__(self, layers: Mapping[str, tuple[nn.Module, str, float]], keep: Mapping[str, torch.Tensor],
                 steps: int):
        super().__init__(dict(keep))
        self.layers = dict(layers)
        self.steps = max(1, int(steps))
        self.step = 0

    def _update(self, model: nn.Module, step: int) -> None:
        for layer, (_module, method, final) in self.layers.items():
            sparsity = cubic_sparsity(final, step, self.steps)
            module = model.get_submodule(layer)
            raw = _RawView(module, raw_parameter(model, f"{layer}.weight" if layer else "weight"))
            self.masks.update(layer_masks(layer, raw, method, sparsity, self.masks))
        self._apply(model)

    def attach(self, model: nn.Module) -> None:
        self.step = 0
        self._update(model, 0)

    def after_step(self, model: nn.Module) -> None:
        self.step += 1
        self._update(model, min(self.step, self.steps))

    def detach(self, model: nn.Module) -> None:
        self._update(model, self.steps)
        get_state(model).masks.update(self.masks)


class _RawView:
    """A synaptic module seen through its trainable tensor (a parametrized weight's ``original``)."""

    def __init__(self, module: nn.Module, weight: torch.Tensor):
        self.weight = weight
        self.bias = getattr(module, "bias", None)


def apply(model: nn.Module, config: PruneConfig, ctx: PassContext) -> PassResult:
    """Prune ``model`` in place; see the module docstring."""
    metrics: dict = {}
    notes: list[str] = []
    # distill: the teacher is the model as given, before anything below changes it
    teacher = frozen_teacher(model) if config.loss == "distill" and config.epochs > 0 else None
    if config.binary_membrane:
        metrics["binary_membrane"] = _binary_membrane(model, config, notes)
    method = config.method()
    dynamic = config.spatial is not None or config.channel_threshold is not None  # runtime masks on the membrane
    if method is None and not dynamic:
        return PassResult(metrics=metrics, notes=notes)
    fine_tune = config.epochs > 0
    if fine_tune and ctx.train_data is None:
        raise ConfigError("pruning fine-tunes on training data: pass --train-data, or --epochs 0")
    if config.spatial is not None:
        metrics["spatial"] = _spatial(model, config)
    if config.channel_threshold is not None:
        metrics["channel"] = _channel(model, config)
    if method is None:
        if fine_tune:
            metrics["fine_tune"] = _fine_tune(model, config, ctx, config.epochs, [], "prune fine-tune", teacher=teacher)
        metrics.update(_ops_metrics(model, ctx, metrics, notes))
        return PassResult(metrics=metrics, notes=notes)
    layers = select_layers(model, config, "synaptic")
    if not layers:
        raise ConfigError("the model has no synaptic layers to prune (check targets)")
    shrink_chain = None
    if config.shrink:  # refused before any fine-tuning is spent
        from snncompress.passes import prune_shrink

        shrink_chain = prune_shrink.prepare(model, ctx)
    state = get_state(model)
    kind, amount = method
    # an override may set another method or amount for some layers (its config is validated on its own)
    chosen = {s.name: (s.module, *(s.config.method() or method)) for s in layers}
    last = layers[-1].name
    if config.targets is None and chosen[last][1] == "structured" and len(chosen) > 1:
        # removing an output row of the last layer removes a class: never by default
        del chosen[last]
        notes.append(f"structured: the last layer '{last}' is left whole (its outputs are the classes; name it "
                     "in targets to prune it)")
    joint = {}
    if config.weight_quant is not None:
        joint = {f"{name}.weight": parse_weight_scheme(config.for_layer(name).weight_quant or config.weight_quant)
                 for name in chosen}
        joint = {k: v for k, v in joint.items() if not v.is_identity}
    if config.schedule == "oneshot":
        for layer, (module, k, a) in chosen.items():
            state.masks.update(layer_masks(layer, module, k, a, state.masks))
        KeepMasks(state.masks).attach(model)
        if fine_tune:
            metrics["fine_tune"] = _fine_tune(model, config, ctx, config.epochs, [FakeQuantWeights(joint)] if joint
                                              else [], "prune fine-tune", teacher=teacher)
    else:
        metrics["fine_tune"] = _gradual(model, config, ctx, chosen, joint, teacher)
    if not fine_tune:
        # a quantized weight pruned without fine-tuning: its codes must say zero where the mask prunes
        # (a fine-tuning re-encodes under the masks itself)
        _reencode(model, chosen, joint, ctx.seed)
    metrics.update(_sparsity_metrics(model, chosen, ctx, notes))
    if dynamic:
        metrics.update(_ops_metrics(model, ctx, metrics, notes))
    if config.shrink:
        metrics["shrink"] = prune_shrink.shrink(model, list(chosen), notes, shrink_chain)
    metrics["method"] = kind
    metrics["configured"] = list(amount) if isinstance(amount, tuple) else amount
    metrics["schedule"] = config.schedule
    if joint:
        metrics["joint_weight_quant"] = config.weight_quant
        notes.append(f"joint: weights of {len(joint)} pruned layers quantized to {config.weight_quant}"
                     + (" in the same fine-tuning" if fine_tune else " (no fine-tuning: nearest rounding)"))
    return PassResult(metrics=metrics, notes=notes)


def _hidden_neurons(model, config: PruneConfig, what: str):
    """The targeted neuron layers; by default every one but the output layer."""
    layers = select_layers(model, config, "neuron")
    if config.targets is None:
        layers = layers[:-1]  # the output layer's spikes are the prediction: never masked by default
    if not layers:
        raise ConfigError(f"{what} needs a hidden neuron layer (the output layer is not masked by default; "
                          "name it in targets to mask it)")
    return layers


def _channel(model, config: PruneConfig) -> dict:
    """Install channel gates on the targeted hidden neuron layers (every one but the output layer)."""
    out = {}
    for sel in _hidden_neurons(model, config, "channel masking"):
        threshold = sel.config.channel_threshold or config.channel_threshold
        source = install_channel_gate(model, sel.name, threshold, sel.config.channel_cost)
        gate = get_state(model).neurons[sel.name]["channel_gate"]
        out[sel.name] = {"threshold": threshold, "source": source, "channels": gate["channels"],
                         "gate": "depthwise" if gate["depthwise"] else "point-wise conv"}
    return {"threshold": config.channel_threshold, "cost": config.channel_cost, "layers": out}


def _spatial(model, config: PruneConfig) -> dict:
    """Install spatial pruning on the targeted hidden neuron layers (every one but the output layer)."""
    layers = _hidden_neurons(model, config, "spatial pruning")
    out = {}
    for sel in layers:
        ratio = sel.config.spatial if sel.config.spatial is not None else config.spatial
        if ratio == 0:  # masks nothing: no ranking to pay for
            continue
        out[sel.name] = {"ratio": ratio, "source": install_spatial_pruning(model, sel.name, ratio)}
    return {"ratio": config.spatial, "layers": out}


def _ops_metrics(model, ctx: PassContext, masks: dict, notes: list[str]) -> dict:
    """Synaptic ops per sample measured before (``ctx.before``) and after on the evaluation data, the share
    of channel-steps each gate kept, and the masks' own work (importance ranking, gates)."""
    from snncompress.costing.describe import Probe
    from snncompress.hardware.description import NeuronLayer, SynapticLayer
    from snncompress.sim.evaluate import evaluate

    data = ctx.data or ctx.train_data
    if data is None:
        return {}
    probe = Probe(model)
    with counted(model) as tallies:
        evaluate(model, data, instruments=[probe])  # an op count: the pipeline measures accuracy itself
    after = probe.description(name="model", data_name=data.name, samples=len(data), steps=data.time_steps,
                              accuracy=None)
    ops = {la.name: la.measured_synaptic_ops_per_sample for la in after.layers if isinstance(la, SynapticLayer)}
    neurons = {la.name: la.neurons for la in after.layers if isinstance(la, NeuronLayer)}
    spatial = masks.get("spatial", {}).get("layers", {})
    importance = sum(importance_ops(neurons.get(n, 0), data.time_steps) for n in spatial)
    out: dict = {"synaptic_ops_after": round(sum(ops.values()), 3), "importance_ops": importance}
    overhead = importance
    channel = masks.get("channel", {}).get("layers", {})
    if channel:
        gating = {n: gate_ops(c["channels"], neurons.get(n, 0) // c["channels"], c["gate"] == "depthwise")
                  * data.time_steps for n, c in channel.items()}
        out["gate_ops"] = sum(gating.values())
        overhead += out["gate_ops"]
        for n, (kept, decided) in tallies.items():
            if n in channel:
                channel[n]["channels_dropped"] = round(1 - kept / decided, 6) if decided else None
                channel[n]["gate_ops"] = gating[n]
        dropped = {n: c.get("channels_dropped") for n, c in channel.items()}
        notes.append("channel masking: channel-steps dropped on " + data.name + ": "
                     + ", ".join(f"{n} {100 * d:.1f}%" for n, d in dropped.items() if d is not None)
                     + f"; gates {out['gate_ops']:,} ops per sample")
    before = ctx.before.description if ctx.before is not None else None
    if before is not None:
        total = sum(la.measured_synaptic_ops_per_sample for la in before.layers if isinstance(la, SynapticLayer))
        out["synaptic_ops_before"] = round(total, 3)
        out["synaptic_ops_reduction"] = round(total / max(out["synaptic_ops_after"], 1e-9), 4)
        # the masks' own work counted against what they save
        out["ops_reduction_with_overhead"] = round(total / max(out["synaptic_ops_after"] + overhead, 1e-9), 4)
        recurrent = [la.name for la in after.layers if isinstance(la, NeuronLayer) and la.recurrent_weights]
        what = ("feed-forward synaptic ops per sample (the recurrent ops of " + ", ".join(recurrent)
                + ", which no mask touches, are left out here and counted by the report)") if recurrent else \
            "synaptic ops per sample"
        notes.append(f"{what} {total:,.0f} -> {out['synaptic_ops_after']:,.0f} "
                     f"({out['synaptic_ops_reduction']:.2f}x, measured on {data.name}); importance ranking "
                     f"{importance:,} ops per sample"
                     + (f", gates {out['gate_ops']:,}" if "gate_ops" in out else "")
                     + f"; {out['ops_reduction_with_overhead']:.2f}x with them")
    return out


def _fine_tune(model, config: PruneConfig, ctx: PassContext, epochs: int, constraints, description: str,
               keep_best: bool = True, teacher: nn.Module | None = None) -> dict:
    # the best epoch by accuracy alone would undo a channel gate's training against its cost (the start,
    # every channel kept, often scores best): with gates, the last epoch is kept
    keep_best = keep_best and config.channel_threshold is None
    train_config = TrainConfig(epochs=epochs, lr=config.lr, loss=config.loss, seed=ctx.seed,
                               schedule=config.lr_schedule, keep_best=keep_best, distill_layers=config.distill_layers,
                               distill_temperature=config.distill_temperature)
    result = train(model, ctx.train_data, ctx.train_data, train_config, show_progress=ctx.show_progress,
                   description=description, constraints=constraints, teacher=teacher)
    return {"epochs": epochs, **result.best_metrics(), "validation": "the training data", "history": result.epochs,
            **distill_metrics(result)}


def _gradual(model, config: PruneConfig, ctx: PassContext, chosen, joint, teacher: nn.Module | None = None) -> dict:
    """Ramp over the first two thirds of the epochs (last epoch kept), fine-tune the rest at the target."""
    steady = config.epochs // 3
    ramp = config.epochs - steady
    batches = len(ctx.train_data.loader(shuffle=True, seed=ctx.seed))
    state = get_state(model)
    gradual = GradualPruning(chosen, state.masks, ramp * batches)
    # the ramp's fake-quantization does not encode: the steady phase (or the re-encode) does
    ramp_fq = [FakeQuantWeights(joint, encode=steady == 0)] if joint else []
    out = {"ramp": _fine_tune(model, config, ctx, ramp, [gradual, *ramp_fq], "gradual pruning", keep_best=False,
                              teacher=teacher),
           "ramp_steps": gradual.steps}
    if steady:
        out["steady"] = _fine_tune(model, config, ctx, steady, [FakeQuantWeights(joint)] if joint else [],
                                   "prune fine-tune", teacher=teacher)
    return out


def _reencode(model, chosen, joint, seed: int) -> None:
    """Encode again, under their masks, the pruned weights that carry codes (or that ``joint`` quantizes)."""
    from snncompress.quant.base import WeightScheme

    state = get_state(model)
    schemes = dict(joint)
    for layer in chosen:
        name = f"{layer}.weight"
        enc = state.tensors.get(name)
        if name not in schemes and enc is not None:
            schemes[name] = WeightScheme.from_dict(enc.scheme)
    if schemes:
        encode_weights(model, schemes, seed)


class _SkipCounter:
    """Forward hooks counting each pruned layer's synaptic ops from active inputs, dense and under its mask."""

    def __init__(self, model: nn.Module, layers: list[str], masks: Mapping[str, torch.Tensor]):
        self.model, self.layers, self.masks = model, layers, masks
        self.dense = dict.fromkeys(layers, 0.0)
        self.kept = dict.fromkeys(layers, 0.0)
        self.handles = []

    def __enter__(self):
        from snncompress.costing.describe import _connectivity

        for layer in self.layers:
            module = self.model.get_submodule(layer)
            mask = self.masks[f"{layer}.weight" if layer else "weight"].reshape(module.weight.shape).to(torch.float32)
            ones = torch.ones_like(mask)

            def hook(mod, inputs, _output, layer=layer, mask=mask, ones=ones):
                active = inputs[0].detach().ne(0).to(torch.float32)
                self.dense[layer] += float(_connectivity(mod, active, ones.to(active.device)).sum())
                self.kept[layer] += float(_connectivity(mod, active, mask.to(active.device)).sum())

            self.handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []


def _sparsity_metrics(model, chosen, ctx: PassContext, notes: list[str]) -> dict:
    """Weight sparsity of the masks and, on the evaluation data, the fraction of synaptic ops they skip."""
    from snncompress.sim.evaluate import evaluate

    state = get_state(model)
    per_layer: dict[str, dict] = {}
    total = kept = 0
    for layer in chosen:
        mask = state.masks[f"{layer}.weight" if layer else "weight"]
        per_layer[layer] = {"weights": int(mask.numel()), "kept": int(mask.sum()),
                            "weight_sparsity": round(1 - float(mask.float().mean()), 6)}
        total += int(mask.numel())
        kept += int(mask.sum())
    out = {"weight_sparsity": round(1 - kept / max(total, 1), 6), "layers": per_layer}
    data = ctx.data or ctx.train_data
    if data is not None:
        counter = _SkipCounter(model, list(chosen), state.masks)
        evaluate(model, data, instruments=[counter])  # an op count: the pipeline measures accuracy itself
        dense, live = sum(counter.dense.values()), sum(counter.kept.values())
        for layer in chosen:
            d = counter.dense[layer]
            per_layer[layer]["ops_skipped"] = round(1 - counter.kept[layer] / d, 6) if d else None
        out["ops_skipped"] = round(1 - live / dense, 6) if dense else None
        out["ops_data"] = data.name
    skipped = out.get("ops_skipped")
    notes.append(f"weight sparsity {100 * out['weight_sparsity']:.1f}% over {len(chosen)} layers"
                 + (f"; measured synaptic ops skipped on {out['ops_data']}: {100 * skipped:.1f}%"
                    if skipped is not None else ""))
    return out


def _binary_membrane(model, config: PruneConfig, notes: list[str]) -> dict:
    """Silence the -1 level of every targeted ternary membrane (levels {0, +1})."""
    state = get_state(model)
    layers = select_layers(model, config, "neuron")
    done = []
    for sel in layers:
        settings = state.neurons.get(sel.name, {})
        membrane = settings.get("membrane")
        if not membrane or (membrane.get("levels_low"), membrane.get("levels_high")) != (-1, 1):
            continue
        quantizer = MembraneQuantizer.from_dict({**membrane, "levels_low": 0})
        install_membrane_quantizer(model, sel.name, quantizer, int(settings.get("membrane_grid", 1)),
                                   settings.get("membrane_unit"))
        done.append(sel.name)
    if not done:
        raise ConfigError("binary membrane needs a ternary membrane: quantize the model first "
                          "(membrane_quant: ternary)")
    notes.append(f"binary membrane: {len(done)} layers {{-1, 0, +1}} -> {{0, +1}}, 2 -> 1 bit per stored membrane")
    return {"layers": done, "bits_before": 2, "bits_after": 1}


def requires(config: PruneConfig) -> dict[str, str | None]:
    needs: dict[str, str | None] = {"data": "the prune pass needs data to measure accuracy and skipped ops: "
                                            "pass --data"}
    dynamic = config.spatial is not None or config.channel_threshold is not None
    if (config.method() is not None or dynamic) and config.epochs > 0:
        needs["train_data"] = "pruning fine-tunes on training data: pass --train-data (or use --data digits), " \
                              "or --epochs 0"
    if config.binary_membrane:
        needs["ternary_membrane"] = "binary membrane needs a ternary membrane: quantize first (membrane_quant: " \
                                    "ternary)"
    return needs


def check(model: nn.Module, config: PruneConfig) -> list[str]:
    """What makes ``config`` impossible on ``model``, found before anything runs: spatial pruning or a
    channel gate on a layer that cannot take one, no synaptic layer to prune, a model that cannot shrink.

    The masks and gates are installed on a copy (the same code ``apply`` runs), so the check and the
    pass cannot disagree; a shrink of a user module needs its recorded chain (data) and is left to ``apply``.
    """
    from snncompress.models.membrane import copy_model

    shrink_here = config.shrink and isinstance(model, nn.Sequential)
    if config.spatial is None and config.channel_threshold is None and not shrink_here:
        return []
    try:
        trial = copy_model(model)
    except Exception:  # noqa: BLE001 -- a model that cannot be copied is checked by apply itself
        return []
    try:
        if config.spatial is not None:
            _spatial(trial, config)
        if config.channel_threshold is not None:
            _channel(trial, config)
        if shrink_here:
            from snncompress.models.shrink import check_shrinkable

            check_shrinkable(trial, None)
    except ConfigError as exc:
        return [str(exc)]
    return []


PRUNE_PASS = PassSpec(
    name="prune",
    config_class=PruneConfig,
    apply=apply,
    summary="Weight pruning (unstructured / structured / N:M, one-shot or gradual, fine-tuned; masks kept by any "
            "later fine-tuning), binary membrane, spatial pruning by membrane importance, channel masking by a "
            "membrane-prior gate.",
    version="1",
    requires=requires,
    check=check,
)
