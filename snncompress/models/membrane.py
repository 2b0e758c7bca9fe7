"""Quantize the stored membrane of snnTorch neurons (SpQuant §4.2.1).

snnTorch's neurons carry ``beta * mem`` into the next step and subtract the reset there:

    subtract:  u[t+1] = beta * u[t] - s[t] * Vth + I[t+1]      (the reset is not leaked)
    zero:      u[t+1] = beta * u[t] * (1 - s[t]) + I[t+1]

We store, on integer levels with no dequantization scale, the membrane after this step's reset
and before the leak, ``v[t]`` with ``beta * v[t]`` equal to what snnTorch carries:

    subtract:  v[t] = u[t] - s[t] * Vth / beta         zero:  v[t] = u[t] * (1 - s[t])
    u_stored[t] = Q(v[t]),      u[t+1] = beta * u_stored[t] + I[t+1]   (the leak: a shift for beta = 2^-k)

and switch snnTorch's own delayed reset off for that neuron (the reset is already in ``v``). The leak is
``beta`` for Leaky, Synaptic, RLeaky and RSynaptic and ``1 - dt/(R C)`` for Lapicque (``leak_factor``);
Alpha keeps no membrane (it is recomputed from two synaptic traces each step), so it has none to quantize. For
reset-to-zero this is SpQuant's ``Q(u - s*Vth)`` with the leak on read; for subtract the reset
amount is ``Vth / beta``, so a fine grid reproduces the trained snnTorch model exactly while the
leak still shrinks the rounding error on read. The spike of step t is computed from the
unquantized ``u[t]``; snnTorch's own ``state_quant`` quantizes *before* firing instead, so a clamp at
the top stops neurons from firing.

The integer grid has ``grid`` levels per threshold: ``Q(v) = unit * clip(round(v / unit), low, high)``
with ``unit = Vth / grid``, fixed when the quantizer is installed. ``grid = 1`` is SpQuant's grid in
units of Vth (ternary: {-Vth, 0, +Vth}); a finer grid is the same integer-only membrane for a layer
whose weights and threshold are scaled by ``grid / Vth`` (threshold = ``grid`` integer levels), which
leaves every spike unchanged. The unit stays fixed when the threshold is learned or calibrated
afterwards (SpQuant §4.4: integer levels, a layer-wise threshold): the threshold then sits between
levels, ``Vth / unit`` levels up, a fixed-point comparison in integer-only hardware.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from snncompress.errors import ConfigError
from snncompress.models.neurons import leak_factor
from snncompress.state import get_state, has_state

# neurons whose membrane is not a kept state (snnTorch Alpha: u[t] = tau_alpha * (exc[t] + inh[t]))
NO_STORED_MEMBRANE = ("Alpha",)


def stored_membrane(module: nn.Module, spikes: torch.Tensor, membrane: torch.Tensor) -> torch.Tensor:
    """``v[t]``: the membrane after this step's reset, before the leak (see the module docstring)."""
    mechanism = int(module.reset_mechanism_val)
    if not getattr(module, "reset_delay", True) or mechanism == 2:
        return membrane  # reset already applied inside the step, or no reset at all
    s = spikes.detach() / module.graded_spikes_factor  # snnTorch's reset signal is detached too (mem_reset)
    if mechanism == 1:
        return membrane * (1 - s)
    # the kept membrane is multiplied by the leak k at the next step (beta; Lapicque: 1 - dt/(RC), which
    # can be negative), and the reset Vth subtracted there: store v with k * v = k * u - s * Vth.
    # k = 0 carries nothing, whatever is stored
    leak = leak_factor(module)
    reset = torch.where(leak != 0, module.threshold / torch.where(leak != 0, leak, 1.0), 0.0)
    return membrane - s * reset


def quantize_stored(module: nn.Module, quantizer: Any, unit: float | torch.Tensor, spikes: torch.Tensor,
                    membrane: torch.Tensor) -> torch.Tensor:
    """``Q(v[t])``: the stored integer-level membrane of one step, levels ``unit`` apart."""
    if isinstance(unit, torch.Tensor) and unit.device != membrane.device:
        unit = unit.to(membrane.device)
    return quantizer.quantize(stored_membrane(module, spikes, membrane), unit)


def membrane_unit(module: nn.Module, grid: int) -> float | list:
    """The level spacing ``Vth / grid`` of a neuron's current threshold (a list for per-neuron thresholds)."""
    threshold = module.threshold.detach().cpu().double() / grid
    return float(threshold) if threshold.numel() == 1 and threshold.dim() == 0 else threshold.tolist()


def unit_tensor(unit: float | list) -> float | torch.Tensor:
    return unit if isinstance(unit, float) else torch.tensor(unit, dtype=torch.float32)


def no_delayed_reset(mem: torch.Tensor) -> torch.Tensor:
    """Stands in for snnTorch's ``mem_reset`` on a quantized neuron: the hook already reset it."""
    return torch.zeros_like(mem)


def _make_hook(quantizer: Any, unit: float | torch.Tensor):
    def hook(module: nn.Module, _inputs, output):
        spikes = output[0] if isinstance(output, tuple) else output
        stored = quantize_stored(module, quantizer, unit, spikes, module.mem)
        module.mem = stored
        if isinstance(output, tuple):
            return (*output[:-1], stored)
        return None

    return hook


def install_membrane_quantizer(model: nn.Module, layer: str, quantizer: Any, grid: int = 1,
                               unit: float | list | None = None) -> None:
    """Quantize the stored membrane of neuron ``layer`` with ``quantizer`` from now on.

    Args:
        model: the model holding the neuron.
        layer: the neuron's qualified module name.
        quantizer: a ``snncompress.quant.membrane.MembraneQuantizer`` (levels in units of Vth / grid).
        grid: integer levels per threshold (1: SpQuant's grid in units of Vth).
        unit: the level spacing; default ``Vth / grid`` of the neuron's threshold now. It stays
            fixed if the threshold changes later (a learned or calibrated threshold).

    Raises:
        ConfigError: ``grid`` is not a positive integer.
    """
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ConfigError(f"membrane grid for '{layer}' must be a positive integer, got {grid!r}")
    module = model.get_submodule(layer)
    if type(module).__name__ in NO_STORED_MEMBRANE:
        raise ConfigError(
            f"neuron layer '{layer}' is an {type(module).__name__} neuron: its membrane is computed afresh at every "
            "step from its two synaptic traces, so there is no stored membrane to quantize; give it membrane_quant "
            "fp32 (--membrane-quant fp32, or a recipe override for this layer); its weights can still be quantized"
        )
    if unit is None:
        threshold = module.threshold.detach()
        if not bool((threshold > 0).all()) or not bool(torch.isfinite(threshold).all()):
            bad = int((~((threshold > 0) & torch.isfinite(threshold))).sum())
            raise ConfigError(
                f"neuron layer '{layer}' has {bad} of {threshold.numel()} thresholds not positive and finite "
                f"(lowest {float(threshold.min()):.4g}; a learned threshold that went below zero fires at every "
                "step): its membrane levels are in units of its threshold; keep this layer's membrane fp32 (a "
                "recipe override membrane_quant: fp32) or retrain with the threshold clamped positive")
        unit = membrane_unit(module, grid)
    state = get_state(model)
    old = state.hooks.pop(layer, None)
    if old is not None:
        old.remove()
    state.hooks[layer] = module.register_forward_hook(_make_hook(quantizer, unit_tensor(unit)))
    module.mem_reset = no_delayed_reset  # instance attribute shadows snnTorch's method
    settings = state.neurons.setdefault(layer, {})
    settings["membrane"] = quantizer.to_dict()
    settings["membrane_grid"] = grid
    settings["membrane_unit"] = unit


class _ClipOnly:
    """Stands in for a membrane quantizer: the negative clip alone (no rounding, no top level).

    The quantize pass stores ``unit * clip(round(v / unit), c * grid, gamma)`` with ``unit = Vth / grid``;
    its clip is the floor ``c * Vth`` on the stored membrane ``v[t]``. Here ``unit`` is ``Vth`` (grid 1),
    so the floor is ``boundary * Vth`` and every other value is kept in fp32.
    """

    def __init__(self, boundary: float) -> None:
        self.boundary = float(boundary)

    def quantize(self, v: torch.Tensor, unit: float | torch.Tensor) -> torch.Tensor:
        floor = torch.as_tensor(self.boundary * unit, dtype=v.dtype, device=v.device)
        return torch.maximum(v, floor)


_NOT_SET = object()


@contextmanager
def clipped_membrane(model: nn.Module, layers: Iterable[str], boundary: float) -> Iterator[None]:
    """Clip the stored membrane of neuron ``layers`` at ``boundary`` x Vth while the block runs.

    The clip acts where the quantize pass's ``clip`` acts, through the same hook
    (:func:`install_membrane_quantizer`): on the stored, post-reset membrane ``v[t]`` (see the module
    docstring), with snnTorch's delayed reset switched off because the reset is already in ``v``:
    ``u_stored[t] = max(v[t], boundary * Vth)``. Nothing else is quantized. On leaving the block the
    hooks are removed and each neuron's own ``mem_reset`` is back; the compression state is not touched.

    Args:
        model: the model holding the neurons.
        layers: qualified names of neuron layers whose membrane is fp32 (no quantizer installed).
        boundary: the clipping boundary c < 0, in units of each layer's threshold.

    Raises:
        ConfigError: ``boundary`` is not negative, or a layer already has a membrane quantizer.
    """
    if not boundary < 0:
        raise ConfigError(f"a clipping boundary is a negative membrane level in units of Vth, got {boundary:g}")
    quantized = set(get_state(model).hooks) if has_state(model) else set()
    handles, saved = [], []
    try:
        for layer in layers:
            if layer in quantized:
                raise ConfigError(f"neuron layer '{layer}' already stores a quantized membrane; clip an fp32 one")
            module = model.get_submodule(layer)
            hook = _make_hook(_ClipOnly(boundary), unit_tensor(membrane_unit(module, 1)))
            handles.append(module.register_forward_hook(hook))
            saved.append((module, module.__dict__.get("mem_reset", _NOT_SET)))
            module.mem_reset = no_delayed_reset
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, old in reversed(saved):
            if old is _NOT_SET:
                del module.mem_reset  # the class's own method again
            else:
                module.mem_reset = old


def reinstall_membrane_hooks(model: nn.Module) -> None:
    """Install the hooks that the model's state describes (after loading or copying)."""
    if not has_state(model):
        return
    from snncompress.quant.membrane import MembraneQuantizer

    # clear hooks a deepcopy carried over from the original module
    for _, module in model.named_modules():
        if getattr(module, "_forward_hooks", None):
            for key in list(module._forward_hooks):
                hook = module._forward_hooks[key]
                if getattr(hook, "__qualname__", "").startswith("_make_hook"):
                    del module._forward_hooks[key]
    state = get_state(model)
    state.hooks = {}
    for layer, settings in list(state.neurons.items()):
        if "membrane" in settings:
            install_membrane_quantizer(model, layer, MembraneQuantizer.from_dict(settings["membrane"]),
                                       int(settings.get("membrane_grid", 1)), settings.get("membrane_unit"))
    from snncompress.models.spatial import reinstall_spatial_pruning

    reinstall_spatial_pruning(model)  # the runtime masks the state describes, beside the quantizers
    from snncompress.models.channel_gate import reinstall_channel_gates

    reinstall_channel_gates(model)


def membrane_quantizers(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Membrane quantizer settings per neuron layer, with its ``grid`` and level ``unit`` (empty when the
    membrane is fp32)."""
    if not has_state(model):
        return {}
    out = {}
    for layer, v in get_state(model).neurons.items():
        if "membrane" in v:
            grid = int(v.get("membrane_grid", 1))
            unit = v.get("membrane_unit")
            if unit is None:
                unit = membrane_unit(model.get_submodule(layer), grid)
            out[layer] = {**v["membrane"], "grid": grid, "unit": unit}
    return out


def copy_model(model: nn.Module) -> nn.Module:
    """Deep-copy a model with its state, reinstalling storage-quantization hooks on the copy."""
    clone = copy.deepcopy(model)
    # deepcopy copies registered hooks too; drop them and rebuild from the state so the copy's
    # hooks refer to the copy's own modules
    if has_state(clone):
        reinstall_membrane_hooks(clone)
    return clone
