"""Quantize the stored membrane of snnTorch neurons (SpQuant §4.2.1).

snnTorch applies the reset at the start of the next step from the membrane it kept. We rewrite the
kept membrane with the quantized post-reset value

    u_post[t]   = u[t] - s[t] * Vth        (subtract)   or   u[t] * (1 - s[t])   (zero)
    u_stored[t] = Q(u_post[t])

so the next step computes ``u[t+1] = beta * u_stored[t] + I[t+1]``: snnTorch's own reset then sees
``u_stored <= Vth`` and adds nothing, which is why the quantizer's top level may not exceed the
threshold. This acts on the stored membrane only; the spike of step t is computed from the
unquantized ``u[t]`` (snnTorch's own ``state_quant`` quantizes before firing instead).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from snncompress.errors import ConfigError
from snncompress.state import get_state, has_state


def post_reset_membrane(module: nn.Module, spikes: torch.Tensor, membrane: torch.Tensor) -> torch.Tensor:
    """The membrane after this step's reset, from the spikes and the pre-reset membrane ``u[t]``."""
    mechanism = int(module.reset_mechanism_val)
    if not getattr(module, "reset_delay", True) or mechanism == 2:
        return membrane  # reset already applied inside the step, or no reset at all
    s = spikes / module.graded_spikes_factor
    if mechanism == 0:
        return membrane - s * module.threshold
    return membrane * (1 - s)


def _make_hook(quantizer: Any):
    def hook(module: nn.Module, _inputs, output):
        spikes = output[0] if isinstance(output, tuple) else output
        stored = quantizer.quantize(post_reset_membrane(module, spikes, module.mem), module.threshold)
        module.mem = stored
        if isinstance(output, tuple):
            return (*output[:-1], stored)
        return None

    return hook


def install_membrane_quantizer(model: nn.Module, layer: str, quantizer: Any) -> None:
    """Quantize the stored membrane of neuron ``layer`` with ``quantizer`` from now on.

    Args:
        model: the model holding the neuron.
        layer: the neuron's qualified module name.
        quantizer: a ``snncompress.quant.membrane.MembraneQuantizer``.

    Raises:
        ConfigError: the quantizer's top level lies above the threshold (snnTorch would reset twice).
    """
    if quantizer.levels_high > 1:
        raise ConfigError(
            f"membrane levels for '{layer}' reach {quantizer.levels_high} x Vth; the stored membrane must "
            "stay <= Vth (top level 1)"
        )
    module = model.get_submodule(layer)
    state = get_state(model)
    old = state.hooks.pop(layer, None)
    if old is not None:
        old.remove()
    state.hooks[layer] = module.register_forward_hook(_make_hook(quantizer))
    state.neurons.setdefault(layer, {})["membrane"] = quantizer.to_dict()


def remove_membrane_quantizer(model: nn.Module, layer: str) -> None:
    state = get_state(model)
    handle = state.hooks.pop(layer, None)
    if handle is not None:
        handle.remove()
    state.neurons.get(layer, {}).pop("membrane", None)


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
            install_membrane_quantizer(model, layer, MembraneQuantizer.from_dict(settings["membrane"]))


def membrane_quantizers(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Membrane quantizer settings per neuron layer (empty when the membrane is fp32)."""
    if not has_state(model):
        return {}
    return {k: v["membrane"] for k, v in get_state(model).neurons.items() if "membrane" in v}
