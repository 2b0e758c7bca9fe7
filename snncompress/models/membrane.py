"""Quantize the stored membrane of snnTorch neurons (SpQuant §4.2.1).

snnTorch's neurons carry ``beta * mem`` into the next step and subtract the reset there:

    subtract:  u[t+1] = beta * u[t] - s[t] * Vth + I[t+1]      (the reset is not leaked)
    zero:      u[t+1] = beta * u[t] * (1 - s[t]) + I[t+1]

We store, on integer levels with no dequantization scale, the membrane after this step's reset
and before the leak, ``v[t]`` with ``beta * v[t]`` equal to what snnTorch carries:

    subtract:  v[t] = u[t] - s[t] * Vth / beta         zero:  v[t] = u[t] * (1 - s[t])
    u_stored[t] = Q(v[t]),      u[t+1] = beta * u_stored[t] + I[t+1]   (the leak: a shift for beta = 2^-k)

and switch snnTorch's own delayed reset off for that neuron (the reset is already in ``v``). For
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
from typing import Any

import torch
from torch import nn

from snncompress.errors import ConfigError
from snncompress.state import get_state, has_state


def stored_membrane(module: nn.Module, spikes: torch.Tensor, membrane: torch.Tensor) -> torch.Tensor:
    """``v[t]``: the membrane after this step's reset, before the leak (see the module docstring)."""
    mechanism = int(module.reset_mechanism_val)
    if not getattr(module, "reset_delay", True) or mechanism == 2:
        return membrane  # reset already applied inside the step, or no reset at all
    s = spikes.detach() / module.graded_spikes_factor  # snnTorch's reset signal is detached too (mem_reset)
    if mechanism == 1:
        return membrane * (1 - s)
    beta = module.beta.clamp(0, 1)
    # beta = 0 carries nothing, whatever is stored
    reset = torch.where(beta > 0, module.threshold / torch.where(beta > 0, beta, 1.0), 0.0)
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
    if unit is None:
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
