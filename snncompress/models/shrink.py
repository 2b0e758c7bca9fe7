"""Shrinking a structurally pruned model: a physically smaller dense model, no masks needed.

Structured pruning (:func:`snncompress.passes.prune_masks.structured_mask`) masks whole output rows of a
synaptic layer: output neuron / channel ``c`` of a ``Linear`` / conv gets no input at all (its bias is
masked too). :func:`shrink_model` removes such outputs for good, in an ``nn.Sequential`` (nested ones are
walked as one chain):

* the synaptic layer's weight rows and bias entries of the removed outputs;
* on the way to the next synaptic layer: each BatchNorm's per-channel entries (``weight``, ``bias``,
  running statistics), each neuron layer's per-neuron tensors (``beta``, ``threshold``, ``alpha``, a
  one-to-one ``V``, Lapicque's ``R`` / ``C`` when they are per neuron; scalars stay), and its membrane
  quantizer's per-neuron level unit;
* the next synaptic layer's input features / channels of the removed outputs. Through an
  ``nn.Flatten(start_dim=1)`` channel ``c`` of ``[B, C, *spatial]`` is the block of features
  ``c * S .. (c + 1) * S - 1``; the block size ``S`` is the next layer's fan-in divided by ``C`` (the
  spatial size at the flatten, as a forward pass would record it).

It is exact: the shrunk model gives the masked model's output spikes bit for bit. A removed output must be
silent whatever the input, so it is removed only when its value at the next synaptic layer is provably
always zero: its pre-activation is a constant (0, or its BatchNorm's shift ``c``, through any max-pool
and unpadded average pool), and its neuron with that constant input never fires, decided per neuron:

* ``c <= 0`` with a non-negative threshold: a Leaky / Synaptic membrane stays ``<= 0`` (snnTorch clamps
  the decays to [0, 1]); any neuron with ``c == 0`` stays at rest;
* ``c > 0`` into a Leaky (decay ``beta = clamp(beta, 0, 1)``) or Synaptic (``alpha``, ``beta``) neuron: from
  rest the membrane rises monotonically toward ``c / (1 - beta)`` (Synaptic: ``c / ((1 - alpha)(1 - beta))``)
  and never gets there; snnTorch fires on ``mem - threshold > 0``, so it is silent when that limit, bounded
  for float32 rounding, stays a relative ``1e-4`` under the threshold. ``beta == 1`` (integrate-and-fire)
  fires eventually. No spike ever comes, so the reset mechanism never acts. A neuron with a membrane
  quantizer (or snnTorch's ``state_quant``) is not bounded through its rounding: it counts as firing for
  ``c > 0``; so do the neurons without a closed form (Lapicque, Alpha, the recurrent ones, multi-spike).

A pruned output that can fire without input is kept, masked, with a note saying why. The last synaptic
layer's outputs are the classes: never removed (a note names any the masks pruned; they stay masked).

The compression state follows: pruning masks, quantized codes and their per-channel scheme parameters
(scales, exponents) are sliced with their tensors (a per-tensor parameter stays), a mask left all-True is
dropped (the layer is dense again: no index in the hardware report). State that cannot be sliced is
refused with one line: spatial pruning (its ranking counts the layer's neurons), all-to-all recurrent
neurons, lateral inhibition, grouped convolutions, a parametrized (being-trained) weight, unknown
per-layer neuron settings.

A shrunk ``nn.Sequential`` is written to a compressed file as its (new) architecture spec, so it loads
back at its new sizes. A user module with its own time loop (snnTorch tutorials 5 and 6) is shrunk along
the chain of its layers (``chain``: what one recorded step calls, checked to give the model's spikes;
:func:`snncompress.export.chain.layer_chain`), its layers resized in place, so its own ``forward`` runs
them. On load such a module is built by its factory at the factory's sizes; the model record therefore
keeps, under ``resized``, the spec of every layer shrinking resized, built in place of the factory's
(:func:`snncompress.models.source.rebuild`). A user module needs that factory reference.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from snncompress.errors import ConfigError
from snncompress.models.layers import SYNAPTIC_TYPES
from snncompress.models.neurons import is_neuron
from snncompress.state import get_state, has_state

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
# zero in, zero out (eval mode; dropout scales zero to zero in training too)
_ZERO_PRESERVING = (nn.Dropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
                    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
# per-neuron settings in state.neurons that shrink slices (or that need no slicing)
_NEURON_SETTINGS = {"membrane", "membrane_grid", "membrane_unit"}
# a constant negative input keeps these neurons' membranes below zero (snnTorch clamps their decays to [0, 1]);
# a positive one is bounded by the closed form of their monotone rise (module docstring)
_SIGN_KEEPING = ("Leaky", "Synaptic")
# a float32 operation's relative rounding, bounded generously (float32's unit roundoff is 6e-8)
_ROUNDING = 1e-6
# an average of n equal float32 values is off by at most ~n/2 roundoffs: this covers windows to ~16k values
_AVERAGE_ROUNDING = 1e-3
# a positive input is silent only if its membrane's limit stays this far (relative) under the threshold
_MARGIN = 1e-4
# the activation rank whose channel dim a synaptic layer's outputs occupy, counted from the end
_CHANNEL_FROM_END = {nn.Linear: 1, nn.Conv1d: 2, nn.Conv2d: 3}


@dataclass
class ShrinkResult:
    """What :func:`shrink_model` did.

    Attributes:
        layers: ``{synaptic layer: [outputs before, outputs after]}`` for every layer that shrank.
        removed: ``{synaptic layer: [the indices of its removed outputs]}`` (as they were numbered before).
        parameters_before: the model's parameter count (its ``nn.Parameter`` entries) before.
        parameters_after: and after.
        masks_dropped: masks that became all-True and were removed (their layers are dense again).
        notes: pruned outputs that were kept, and why.
    """

    layers: dict[str, list[int]] = field(default_factory=dict)
    removed: dict[str, list[int]] = field(default_factory=dict)
    parameters_before: int = 0
    parameters_after: int = 0
    masks_dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"layers": self.layers, "removed": self.removed, "parameters_before": self.parameters_before,
                "parameters_after": self.parameters_after, "masks_dropped": self.masks_dropped}


@dataclass
class _Leaf:
    name: str
    module: nn.Module


def shrink_model(model: nn.Module, layers: Iterable[str] | None = None,
                 chain: list[str | None] | None = None) -> ShrinkResult:
    """Remove, in place, the pruned output channels / neurons of ``model`` (see the module docstring).

    Args:
        model: an ``nn.Sequential`` whose compression state holds structured masks, or a user module
            whose ``chain`` is given.
        layers: the synaptic layers whose outputs may be removed (default: every one but the last).
        chain: for a user module with its own time loop, the qualified names of the layers one time step
            calls, in order, ``None`` for a flatten between two
            (:func:`snncompress.export.chain.layer_chain` finds and checks it).

    Returns:
        What was removed and the parameter counts before and after.

    Raises:
        ConfigError: a user module without its chain, a named layer that is not one of its synaptic layers
            (or the last one), or a layer whose state cannot be sliced (one line naming it).
    """
    check_shrinkable(model, chain)
    from snncompress.models.membrane import copy_model

    _clear_hidden_state(model)  # a last run's membranes (part of its autograd graph) cannot be copied
    # every refusal is found on a copy first, so a refused model is left exactly as it was
    _shrink(copy_model(model), layers, chain)
    return _shrink(model, layers, chain)


def check_shrinkable(model: nn.Module, chain: list[str | None] | None = None) -> None:
    """Refuse, before any work, a model :func:`shrink_model` cannot shrink whatever its masks.

    Raises:
        ConfigError: a user module without its chain, or one not rebuilt from a factory; or a layer whose
            state cannot be sliced.
    """
    if not isinstance(model, nn.Sequential):
        if chain is None:
            raise ConfigError(f"shrinking {type(model).__name__}, a user module, needs the chain of its layers "
                              "(snncompress.export.chain.layer_chain)")
        source = get_state(model).source if has_state(model) else {}
        if source.get("kind") != "factory":
            raise ConfigError(f"shrinking {type(model).__name__} needs it loaded from a package.module:factory "
                              "reference: the file records the new layer sizes on top of what the factory builds")
    _check_model(model, _resolve(model, chain))


def chain_synaptic(model: nn.Module, chain: list[str | None] | None = None) -> list[str]:
    """The synaptic layers in forward order (of the chain, for a user module)."""
    return [leaf.name for leaf in _resolve(model, chain) if isinstance(leaf.module, SYNAPTIC_TYPES)]


def _resolve(model: nn.Module, chain: list[str | None] | None) -> list[_Leaf]:
    if chain is None:
        return _leaves(model, "")
    return [_Leaf(name, model.get_submodule(name)) if name else _Leaf("", nn.Flatten()) for name in chain]


def _shrink(model: nn.Module, layers: Iterable[str] | None, names: list[str | None] | None) -> ShrinkResult:
    chain = _resolve(model, names)
    synaptic = [i for i, leaf in enumerate(chain) if isinstance(leaf.module, SYNAPTIC_TYPES)]
    if not synaptic:
        raise ConfigError("the model has no synaptic layers to shrink")
    names = [chain[i].name for i in synaptic]
    wanted = set(names[:-1]) if layers is None else set(layers)
    unknown = sorted(wanted - set(names))
    if unknown:
        raise ConfigError(f"cannot shrink '{unknown[0]}': not a synaptic layer of the model "
                          f"(synaptic layers: {', '.join(names)})")
    if names[-1] in wanted:
        raise ConfigError(f"cannot shrink the last synaptic layer '{names[-1]}': its outputs are the model's "
                          "classes")
    _check_model(model, chain)
    state = get_state(model)
    result = ShrinkResult(parameters_before=_count(model))
    pruned = int(_pruned_rows(state, chain[synaptic[-1]]).sum())
    if pruned:
        result.notes.append(f"last layer '{names[-1]}': its {pruned} pruned outputs are the model's classes and "
                            "are kept (masked)")
    for pos, i in enumerate(synaptic[:-1]):
        if chain[i].name in wanted:
            _shrink_one(model, chain, i, synaptic[pos + 1], state, result)
    for name in [n for n, m in state.masks.items() if bool(m.all())]:
        del state.masks[name]
        result.masks_dropped.append(name)
    if names is not None or get_state(model).source.get("kind") == "factory":
        _record_sizes(model, chain, result)  # a factory builds the old sizes: the record keeps the new
    from snncompress.models.membrane import reinstall_membrane_hooks

    reinstall_membrane_hooks(model)  # a hook holds its layer's level unit: rebuild it from the sliced state
    result.parameters_after = _count(model)
    return result


def _resized(module: nn.Module) -> bool:
    """Whether shrinking changes the module's sizes: a synaptic layer or BatchNorm, a neuron with per-neuron
    tensors (a neuron with scalar parameters is the factory's own)."""
    if isinstance(module, (*SYNAPTIC_TYPES, *_BATCHNORMS)):
        return True
    return is_neuron(module) and any(t.numel() > 1 for t in module.state_dict().values())


def _record_sizes(model: nn.Module, chain: list[_Leaf], result: ShrinkResult) -> None:
    """A user module is rebuilt by its factory at the factory's sizes: the source record keeps the spec of
    every layer shrinking resized (the shrunk layers, the layers between, the next ones), which
    :func:`snncompress.models.source.rebuild` builds in their place."""
    from snncompress.models.layers import module_spec

    synaptic = [i for i, leaf in enumerate(chain) if isinstance(leaf.module, SYNAPTIC_TYPES)]
    touched: list[_Leaf] = []
    for pos, i in enumerate(synaptic[:-1]):
        if chain[i].name in result.layers:
            touched += [leaf for leaf in chain[i:synaptic[pos + 1] + 1] if _resized(leaf.module)]
    source = get_state(model).source
    resized = dict(source.get("resized") or {})
    for leaf in touched:
        resized[leaf.name] = module_spec(leaf.module)
    source["resized"] = resized


def _clear_hidden_state(model: nn.Module) -> None:
    """Every neuron's hidden state (mem, syn: non-persistent buffers) back to snnTorch's empty start."""
    for module in model.modules():
        if is_neuron(module):
            persistent = set(module.state_dict(keep_vars=True))
            for key, t in list(module.named_buffers(recurse=False)):
                if key not in persistent:
                    setattr(module, key, torch.zeros(0, dtype=t.dtype, device=t.device))


def _leaves(module: nn.Module, prefix: str) -> list[_Leaf]:
    out = []
    for name, child in module.named_children():
        qual = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential):
            out += _leaves(child, qual)
        else:
            out.append(_Leaf(qual, child))
    return out


def _count(model: nn.Module) -> int:
    return sum(int(p.numel()) for p in model.parameters())  # as the measurement counts them


def _check_model(model: nn.Module, chain: list[_Leaf]) -> None:
    """Refuse what shrinking cannot keep exact (one line naming the layer)."""
    state = get_state(model) if has_state(model) else None
    synaptic = [i for i, leaf in enumerate(chain) if isinstance(leaf.module, SYNAPTIC_TYPES)]
    last = synaptic[-1] if synaptic else len(chain)
    for index, leaf in enumerate(chain):
        m = leaf.module
        if is_neuron(m) and index < last:  # a hidden layer whose neurons may be removed: refuse up front
            for flag, why in (("inhibition", "has lateral inhibition (its neurons compete)"),
                              ("all_to_all", "is all-to-all recurrent (a removed neuron would still receive "
                                             "its neighbours' spikes)")):
                if getattr(m, flag, False):
                    raise ConfigError(f"cannot shrink: neuron layer '{leaf.name}' {why}")
        if isinstance(m, SYNAPTIC_TYPES) and parametrize.is_parametrized(m):
            raise ConfigError(f"cannot shrink layer '{leaf.name}': its weight is parametrized (being trained); "
                              "shrink after the fine-tuning")
        if not is_neuron(m):
            continue
        if state is not None:
            extra = sorted(set(state.neurons.get(leaf.name, {})) - _NEURON_SETTINGS)
            if extra:
                why = " (spatial pruning ranks all the layer's neurons)" if "spatial" in extra else ""
                raise ConfigError(f"cannot shrink: neuron layer '{leaf.name}' has {extra[0]} settings{why}")


def _pruned_rows(state, leaf: _Leaf) -> torch.Tensor:
    """Bool per output row: True where the masks remove the row's every weight and its bias (if any)."""
    weight = leaf.module.weight
    wmask = state.masks.get(_key(leaf.name, "weight"))
    if wmask is None:
        return torch.zeros(weight.shape[0], dtype=torch.bool)
    dead = ~wmask.reshape(weight.shape[0], -1).bool().any(dim=1).cpu()
    if getattr(leaf.module, "bias", None) is not None:
        bmask = state.masks.get(_key(leaf.name, "bias"))
        bias = leaf.module.bias.detach().cpu()
        # an unmasked bias of exactly zero feeds nothing either
        bias_dead = ~bmask.reshape(-1).bool().cpu() if bmask is not None else bias.eq(0)
        dead &= bias_dead
    return dead


def _key(layer: str, param: str) -> str:
    return f"{layer}.{param}" if layer else param


def _shrink_one(model, chain: list[_Leaf], i: int, j: int, state, result: ShrinkResult) -> None:
    """Remove the silent pruned outputs of synaptic layer ``chain[i]``; ``chain[j]`` is the next one."""
    layer = chain[i]
    module = layer.module
    if getattr(module, "groups", 1) != 1:
        raise ConfigError(f"cannot shrink layer '{layer.name}': a grouped convolution's channels are tied to "
                          "its groups")
    dead = _pruned_rows(state, layer)
    if not bool(dead.any()):
        return
    rows = dead.numel()
    # what each pruned output carries (its masked pre-activation is exactly 0), pushed through the chain as
    # per-channel bounds [lo, hi] on every step's value, float32 rounding included
    lo = torch.zeros(rows, dtype=torch.float64)
    hi = torch.zeros(rows, dtype=torch.float64)
    silent = dead.clone()
    reasons: list[str] = []
    k = _CHANNEL_FROM_END[type(module)]
    flatten_at = None
    for leaf in chain[i + 1:j]:
        m = leaf.module
        if isinstance(m, _BATCHNORMS):
            if flatten_at is not None:
                raise ConfigError(f"cannot shrink layer '{layer.name}': BatchNorm '{leaf.name}' after a flatten")
            lo, hi = _batchnorm_bounds(m, lo, hi)
        elif is_neuron(m):
            if flatten_at is not None:
                raise ConfigError(f"cannot shrink layer '{layer.name}': neuron layer '{leaf.name}' after a flatten")
            quantized = "membrane" in state.neurons.get(leaf.name, {})
            quiet, why = _neuron_silent(leaf, lo, hi, rows, k, quantized)
            if bool((dead & silent & ~quiet).any()):
                reasons.append(why)
            silent &= quiet
            lo, hi = torch.zeros_like(lo), torch.zeros_like(hi)  # a silent neuron outputs zero spikes
        elif isinstance(m, nn.Flatten):
            if (m.start_dim, m.end_dim) != (1, -1) or flatten_at is not None:
                raise ConfigError(f"cannot shrink layer '{layer.name}' through '{leaf.name}': only "
                                  "Flatten(start_dim=1, end_dim=-1) keeps channel blocks contiguous")
            flatten_at = leaf.name or "the flatten"
        elif isinstance(m, _ZERO_PRESERVING):
            lo, hi = _passed_bounds(m, lo, hi)
        else:
            raise ConfigError(f"cannot shrink layer '{layer.name}' through '{leaf.name}' "
                              f"({type(m).__name__})")
    constant = lo.ne(0) | hi.ne(0)  # what reaches the next synaptic layer must be exactly zero
    if bool((dead & silent & constant).any()):
        reasons.append(f"their BatchNorm shift reaches the next synaptic layer '{chain[j].name}'")
    silent &= ~constant
    kept_pruned = int((dead & ~silent).sum())
    if kept_pruned:
        result.notes.append(f"layer '{layer.name}': {kept_pruned} of its {int(dead.sum())} pruned outputs kept "
                            f"(masked), they can fire without input: {'; '.join(reasons)}")
    remove = dead & silent
    if not bool(remove.any()):
        return
    keep = torch.nonzero(~remove).flatten()
    if keep.numel() == 0:
        raise ConfigError(f"cannot shrink layer '{layer.name}': every output is pruned (the model would be cut "
                          "in two)")
    nxt = chain[j]
    if getattr(nxt.module, "groups", 1) != 1:
        raise ConfigError(f"cannot shrink layer '{layer.name}': the next layer '{nxt.name}' is a grouped "
                          "convolution")
    fan_in = nxt.module.weight.shape[1]
    if flatten_at is not None:
        if fan_in % rows:
            raise ConfigError(f"cannot shrink layer '{layer.name}': '{nxt.name}' takes {fan_in} features after "
                              f"'{flatten_at}', not a multiple of its {rows} channels")
        block = fan_in // rows
        columns = (keep.unsqueeze(1) * block + torch.arange(block)).flatten()
    else:
        if fan_in != rows:
            raise ConfigError(f"cannot shrink layer '{layer.name}': '{nxt.name}' takes {fan_in} inputs, "
                              f"not its {rows} outputs")
        columns = keep
    _slice_tensor(model, state, layer.name, module, "weight", [(0, keep)])
    if module.bias is not None:
        _slice_tensor(model, state, layer.name, module, "bias", [(0, keep)])
    if isinstance(module, nn.Linear):
        module.out_features = int(keep.numel())
    else:
        module.out_channels = int(keep.numel())
    for leaf in chain[i + 1:j]:
        m = leaf.module
        if isinstance(m, _BATCHNORMS):
            for key in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, key, None) is not None:
                    _slice_tensor(model, state, leaf.name, m, key, [(0, keep)])
            m.num_features = int(keep.numel())
        elif is_neuron(m):
            _slice_neuron(model, state, leaf, keep, rows, k)
    _slice_tensor(model, state, nxt.name, nxt.module, "weight", [(1, columns)])
    if isinstance(nxt.module, nn.Linear):
        nxt.module.in_features = int(columns.numel())
    else:
        nxt.module.in_channels = int(columns.numel())
    result.layers[layer.name] = [rows, int(keep.numel())]
    result.removed[layer.name] = torch.nonzero(remove).flatten().tolist()


def _batchnorm_bounds(bn: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds per channel on BatchNorm (eval) of an input in ``[lo, hi]``, float32 rounding included.

    PyTorch computes ``x * a + (bias - mean * a)`` with ``a = weight / sqrt(var + eps)``: each term is off
    by a few roundoffs of its own size, so the bounds widen by ``_ROUNDING`` of the terms' magnitudes.
    """
    scale = torch.ones_like(lo)
    mean = torch.zeros_like(lo)
    if not bn.track_running_stats or bn.running_mean is None:
        # it normalizes by the batch's own statistics: a channel that is exactly 0 everywhere stays 0 (then
        # the bias is added); a nonzero constant's rounding would be blown up by 1 / sqrt(eps): unbounded
        exact = lo.eq(0) & hi.eq(0)
        lo = torch.where(exact, lo, torch.full_like(lo, -torch.inf))
        hi = torch.where(exact, hi, torch.full_like(hi, torch.inf))
    else:
        scale = 1 / torch.sqrt(bn.running_var.detach().double().cpu() + bn.eps)
        mean = bn.running_mean.detach().double().cpu()
    bias = torch.zeros_like(lo)
    if bn.affine:
        scale = scale * bn.weight.detach().double().cpu()
        bias = bn.bias.detach().double().cpu()
    ends = torch.stack([lo * scale, hi * scale])
    shift = bias - mean * scale
    slack = _ROUNDING * (ends.abs().amax(dim=0) + bias.abs() + (mean * scale).abs())
    # an unbounded input times a zero weight is nan here: unbounded still
    lo, hi = ends.amin(dim=0) + shift - slack, ends.amax(dim=0) + shift + slack
    return lo.masked_fill(lo.isnan(), -torch.inf), hi.masked_fill(hi.isnan(), torch.inf)


def _passed_bounds(m: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds per channel on what a dropout / pooling layer makes of an input in ``[lo, hi]``.

    A max-pool's every window holds a real value (its padding is -inf), so its max lies in ``[lo, hi]``; an
    average pool's mean of values in ``[lo, hi]`` (and of zero padding, with ``count_include_pad``) lies in
    ``[min(lo, 0), max(hi, 0)]``, scaled by ``window / divisor_override`` where that is set; dropout zeroes a
    value or scales it by ``1 / (1 - p)`` in training (eval: as is). Zero stays exactly zero in every case.
    """
    if isinstance(m, _MAX_POOLS) or isinstance(m, nn.Identity):
        return lo, hi
    if isinstance(m, nn.Dropout):
        if m.p >= 1:
            return torch.zeros_like(lo), torch.zeros_like(hi)
        gain = 1 / (1 - m.p)
        return torch.minimum(lo, lo * gain).clamp(max=0), torch.maximum(hi, hi * gain).clamp(min=0)
    if isinstance(m, _AVG_POOLS):
        gain = 1.0
        if getattr(m, "divisor_override", None):
            kernel = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * (
                2 if isinstance(m, nn.AvgPool2d) else 1)
            gain = max(1.0, float(torch.tensor(kernel).prod()) / m.divisor_override)
        padded = any(torch.tensor(m.padding).flatten().tolist()) if hasattr(m, "padding") else False
        if padded or getattr(m, "ceil_mode", False) or gain != 1.0:
            lo, hi = lo.clamp(max=0) * gain, hi.clamp(min=0) * gain
        slack = _AVERAGE_ROUNDING * torch.maximum(lo.abs(), hi.abs())
        return lo - slack, hi + slack
    raise AssertionError(f"no bounds for {type(m).__name__}")  # _ZERO_PRESERVING lists only the above


def _neuron_silent(leaf: _Leaf, lo: torch.Tensor, hi: torch.Tensor, rows: int, k: int,
                   quantized: bool) -> tuple[torch.Tensor, str]:
    """Bool per channel: the neurons with every step's input in ``[lo, hi]`` never fire, from rest (module
    docstring); and, for the note, why a channel may fire."""
    m = leaf.module
    if getattr(m, "inhibition", False):
        raise ConfigError(f"cannot shrink: neuron layer '{leaf.name}' has lateral inhibition (its neurons "
                          "compete)")
    if getattr(m, "all_to_all", False):
        raise ConfigError(f"cannot shrink: neuron layer '{leaf.name}' is all-to-all recurrent (a removed neuron "
                          "would still receive its neighbours' spikes)")
    kind = type(m).__name__
    if getattr(m, "state_quant", False):  # snnTorch quantizes the membrane before firing: zero may not stay zero
        return torch.zeros(rows, dtype=torch.bool), f"neuron layer '{leaf.name}' ({kind}) uses snnTorch's state_quant"
    values = {"threshold": m.threshold}
    for key in {"Leaky": ("beta",), "Synaptic": ("alpha", "beta")}.get(kind, ()):
        values[key] = getattr(m, key).clamp(0, 1)  # what snnTorch's step uses
    values = _per_neuron(values, rows, k)
    thr = values["threshold"]
    at_rest = (thr >= 0).all(dim=1)  # spike = Heaviside(u - Vth) with u <= 0: fires only for Vth < 0
    if kind not in _SIGN_KEEPING:
        why = f"neuron layer '{leaf.name}' ({kind}) is bounded only for a zero input"
        return at_rest & lo.eq(0) & hi.eq(0), why
    silent = at_rest & hi.le(0)
    if quantized:
        return silent, f"neuron layer '{leaf.name}' ({kind}) has a membrane quantizer: bounded only for an input <= 0"
    # from rest, m[t+1] = beta m[t] + x[t] (Synaptic: s[t+1] = alpha s[t] + x[t], m[t+1] = beta m[t] + s[t+1])
    # stays under x_max / (1 - beta); each float32 step rounds up by at most a factor (1 + _ROUNDING)
    up = 1 + _ROUNDING
    limit = hi.clamp(min=0).unsqueeze(1).expand_as(thr)
    for key in ("alpha", "beta"):
        if key in values:
            gain = values[key] * up * up
            limit = torch.where(gain < 1, limit * up / (1 - gain).clamp(min=1e-300),
                                torch.full_like(limit, torch.inf))
    bounded = (limit <= thr * (1 - _MARGIN)).all(dim=1)
    why = f"neuron layer '{leaf.name}' ({kind}) can reach its threshold on the constant its BatchNorm shift feeds it"
    return silent | (hi.gt(0) & bounded), why


def _per_neuron(values: dict[str, torch.Tensor], rows: int, k: int) -> dict[str, torch.Tensor]:
    """``{name: [rows, n]}``: the values each channel's neurons see, broadcast together (the same ``n``)."""
    tensors = [torch.as_tensor(v).detach().double().cpu() for v in values.values()]
    # each broadcasts to the activation's shape, so to one another's: the same neurons in the same order
    return {key: _channel_values(t, rows, k) for key, t in zip(values, torch.broadcast_tensors(*tensors), strict=True)}


def _channel_values(t: torch.Tensor, rows: int, k: int) -> torch.Tensor:
    """``[rows, n]``: the values of ``t`` each channel's neurons see."""
    t = torch.as_tensor(t).detach().double().cpu()
    if t.dim() < k or t.shape[t.dim() - k] == 1:
        return t.reshape(1, -1).expand(rows, -1)
    return t.movedim(t.dim() - k, 0).reshape(rows, -1)


def _slice_neuron(model, state, leaf: _Leaf, keep: torch.Tensor, rows: int, k: int) -> None:
    """Slice every per-neuron tensor of a neuron layer (and its membrane unit) to the kept channels."""
    m = leaf.module
    persistent = set(m.state_dict(keep_vars=True))
    for key, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
        if key not in persistent:
            continue  # hidden state, cleared: sized by the next input
        dim = t.dim() - k
        if t.dim() >= k and t.shape[dim] == rows and rows > 1:
            _slice_tensor(model, state, leaf.name, m, key, [(dim, keep)])
        elif t.dim() >= k and t.shape[dim] not in (1, rows):
            raise ConfigError(f"cannot shrink: '{_key(leaf.name, key)}' has shape {list(t.shape)}, which does not "
                              f"broadcast over {rows} channels")
    settings = state.neurons.get(leaf.name, {})
    unit = settings.get("membrane_unit")
    if isinstance(unit, list):
        t = torch.tensor(unit, dtype=torch.float64)
        dim = t.dim() - k
        if t.dim() >= k and t.shape[dim] == rows and rows > 1:
            settings["membrane_unit"] = t.index_select(dim, keep).tolist()


def _slice_tensor(model, state, layer: str, module: nn.Module, key: str, plan: list[tuple[int, torch.Tensor]]) -> None:
    """Slice ``module.key`` along each ``(dim, index)`` of ``plan``, with its mask and its encoding."""
    old = getattr(module, key)
    shape = tuple(old.shape)
    value = old.detach()
    for dim, index in plan:
        value = value.index_select(dim, index.to(value.device))
    value = value.clone()
    if isinstance(old, nn.Parameter):
        setattr(module, key, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(module, key, value)
    name = _key(layer, key)
    mask = state.masks.get(name)
    if mask is not None:
        mask = mask.reshape(shape)
        for dim, index in plan:
            mask = mask.index_select(dim, index.to(mask.device))
        state.masks[name] = mask.clone()
    enc = state.tensors.get(name)
    if enc is not None:
        state.tensors[name] = _slice_encoded(enc, shape, plan, name)


def _slice_encoded(enc, shape: tuple[int, ...], plan: list[tuple[int, torch.Tensor]], name: str):
    """The encoded tensor's codes sliced like the tensor; a per-channel parameter along with them, a
    per-tensor one as it is."""
    from snncompress.quant.encoded import EncodedTensor

    codes = enc.codes.reshape(shape)
    for dim, index in plan:
        codes = codes.index_select(dim, index.to(codes.device))
    params = {}
    for pname, p in enc.params.items():
        for dim, index in plan:
            if p.numel() == 1:
                break
            if p.dim() != len(shape):
                raise ConfigError(f"cannot shrink '{name}': its scheme parameter '{pname}' of shape {list(p.shape)} "
                                  f"cannot be sliced with a tensor of shape {list(shape)}")
            if p.shape[dim] == shape[dim] and shape[dim] > 1:
                p = p.index_select(dim, index.to(p.device))
            elif p.shape[dim] != 1:
                raise ConfigError(f"cannot shrink '{name}': its scheme parameter '{pname}' of shape {list(p.shape)} "
                                  f"groups dim {dim} of {list(shape)}")
        params[pname] = p.clone()
    return EncodedTensor(codes=codes.clone(), bits=enc.bits, params=params, scheme=enc.scheme)


__all__ = ["ShrinkResult", "chain_synaptic", "check_shrinkable", "shrink_model"]
