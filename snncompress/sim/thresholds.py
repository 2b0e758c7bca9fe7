"""Learnable layer-wise thresholds with their own gradient path (SpQuant §4.4, Eq. 24-27).

A spike is ``s = H(u - Vth)``. snnTorch differentiates it through the neuron's spike surrogate
for both inputs: ``ds/du = sg(u - Vth)`` and ``ds/dVth = -sg(u - Vth)``, and its subtract reset
``u - s * Vth`` sends a second gradient to the threshold. SpQuant keeps the surrogate for the
membrane and gives the threshold its own path, the Gradient Penalty Window (GPW), counting only
the neurons that fired::

    dL/du   = dL/ds * sg(u - Vth)                                     (the neuron's own surrogate)
    dL/dVth = sum over fired (u >= Vth) of dL/ds * (-GPW(u - Vth))    (summed to the layer's scalar)

Windows, ``x = u - Vth`` in membrane units, width ``W``; each peaks at 1 and has area ``W``, so the
three shapes give the threshold comparable step sizes::

    sigmoid    GPW(x) = 4 * sigma(4x / W) * (1 - sigma(4x / W))       (the default)
    triangle   GPW(x) = max(0, 1 - |x| / W)
    rectangle  GPW(x) = 1 if |x| < W / 2 else 0

Ours, per the paper: the threshold's gradient is Eq. 27 alone. The reset path's gradient
(snnTorch's subtract reset ``- s * Vth``, and the stored-membrane hook's ``- s * Vth / beta`` of
:mod:`snncompress.models.membrane`) is cut: both read the threshold detached. "Fired" is the
neuron's own spike (snnTorch fires at ``u > Vth``; the paper writes ``u >= Vth``).

How it hooks in (undone exactly by :meth:`GPWThresholds.detach`):

* the threshold becomes a parameter (a buffer again afterwards) with a parametrization that hands
  out its value *detached*: everything snnTorch and the membrane hooks read (``module.threshold``)
  carries no gradient;
* the neuron's ``fire`` is shadowed by an instance attribute that adds the GPW path, a term that is
  zero in the forward pass and gives the threshold its Eq. 27 gradient in the backward pass, to the
  spikes of the neuron's own ``fire``. The forward pass is unchanged bit for bit.

A threshold stored in fixed point (``neuron_quant`` of the quantize pass) is fake-quantized while it
trains (straight-through) and re-encoded with its stored scheme at the end, so it stays on its grid
and its value is exactly what its codes decode to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from snncompress.errors import ConfigError
from snncompress.sim.constraints import Constraint, threshold_value
from snncompress.state import get_state, has_state

__all__ = ["WINDOWS", "GPWThresholds", "gpw", "threshold_gradient"]

Window = Literal["sigmoid", "triangle", "rectangle"]
WINDOWS: tuple[str, ...] = ("sigmoid", "triangle", "rectangle")


def gpw(x: torch.Tensor, window: str = "sigmoid", width: float = 1.0) -> torch.Tensor:
    """The Gradient Penalty Window at ``x = u - Vth`` (see the module docstring for each shape).

    Raises:
        ConfigError: an unknown window or a width that is not positive.
    """
    if width <= 0:
        raise ConfigError(f"window width must be > 0, got {width}")
    if window == "sigmoid":
        sig = torch.sigmoid(4.0 * x / width)
        return 4.0 * sig * (1.0 - sig)
    if window == "triangle":
        return (1.0 - x.abs() / width).clamp(min=0.0)
    if window == "rectangle":
        return (x.abs() < width / 2).to(x.dtype)
    raise ConfigError(f"unknown threshold window '{window}' (choose from {', '.join(WINDOWS)})")


def _reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to the threshold's shape (a scalar, or one value per neuron)."""
    if len(shape) == 0:
        return grad.sum()
    lead = grad.dim() - len(shape)
    grad = grad.sum(dim=tuple(range(lead))) if lead > 0 else grad
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _ThresholdPath(torch.autograd.Function):
    """Zero forward; backward: Eq. 27 for the threshold, nothing for the membrane (the surrogate has it)."""

    @staticmethod
    def forward(ctx, membrane, threshold, fired, window, width):  # noqa: D102
        ctx.save_for_backward(membrane, threshold, fired)
        ctx.window, ctx.width = window, width
        return torch.zeros_like(membrane)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        membrane, threshold, fired = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None, None, None
        local = -gpw(membrane - threshold, ctx.window, ctx.width) * fired
        return None, _reduce_to(grad * local, threshold.shape).reshape(threshold.shape), None, None, None


def threshold_gradient(membrane: torch.Tensor, threshold: torch.Tensor, fired: torch.Tensor,
                       window: str = "sigmoid", width: float = 1.0) -> torch.Tensor:
    """A term that is zero in the forward pass and carries Eq. 27 to ``threshold`` in the backward pass.

    Add it to the spikes: ``dL/dVth = sum(fired * dL/ds * -GPW(u - Vth))``.

    Args:
        membrane: ``u``, the membrane the spikes were fired from (its gradient is not touched).
        threshold: the layer's threshold, a scalar or one value per neuron (broadcast against ``u``).
        fired: 1 where the neuron spiked, else 0 (same shape as ``u``).
        window, width: the Gradient Penalty Window.
    """
    gpw(membrane.new_zeros(()), window, width)  # validate before the backward pass needs it
    return _ThresholdPath.apply(membrane.detach(), threshold, fired.detach().to(membrane.dtype), window, width)


class _Detached(nn.Module):
    """Parametrization: the threshold every reader sees, fake-quantized if stored in fixed point, detached."""

    def __init__(self, scheme=None):
        super().__init__()
        self.scheme = scheme

    def forward(self, vth: torch.Tensor) -> torch.Tensor:
        return _quantized(vth, self.scheme).detach()


def _quantized(vth: torch.Tensor, scheme) -> torch.Tensor:
    if scheme is None:
        return vth
    flat = vth.reshape(-1) if vth.dim() == 0 else vth  # encoded as the quantize pass encodes it
    return scheme.fake_quant(flat).reshape(vth.shape)


def _make_fire(module: nn.Module, own_fire, window: str, width: float):
    """``fire`` with the GPW path added: the same spikes, Eq. 27 for the threshold."""

    def fire(mem: torch.Tensor) -> torch.Tensor:
        spk = own_fire(mem)  # reads the detached threshold: gives the membrane its surrogate only
        if not torch.is_grad_enabled():
            return spk
        if module.state_quant:
            mem = module.state_quant(mem)
        vth = _quantized(module.parametrizations.threshold.original, module.parametrizations.threshold[0].scheme)
        fired = (spk.detach() != 0).to(mem.dtype)
        return spk + threshold_gradient(mem, vth, fired, window, width) * module.graded_spikes_factor

    return fire


class GPWThresholds(Constraint):
    """Train each named neuron layer's threshold through the Gradient Penalty Window (Eq. 24-27).

    During training each threshold is a parameter whose gradient is Eq. 27 only (module docstring);
    afterwards it is what it was before (a buffer, or a parameter if the user made it learnable
    with snnTorch's ``learn_threshold=True``) holding the learned value, re-encoded on its
    fixed-point grid when the compression state stores it encoded.

    Args:
        layers: neuron layer names.
        window: ``sigmoid`` (default), ``triangle`` or ``rectangle``.
        width: the window's width ``W``, in membrane units.
        lr_scale: the thresholds' learning rate as a multiple of the base learning rate.
        min_threshold: the smallest threshold allowed after each step (a threshold at or below 0
            would fire on a resting membrane).

    Raises:
        ConfigError: an unknown window, a width <= 0, or a neuron with ``inhibition`` (it fires
            through ``fire_inhibition``, which this does not route).
    """

    name = "gpw-thresholds"

    def __init__(self, layers: Iterable[str], window: str = "sigmoid", width: float = 1.0,
                 lr_scale: float = 1.0, min_threshold: float = 1e-3):
        gpw(torch.zeros(()), window, width)
        self.layers = list(layers)
        self.window, self.width = window, float(width)
        self.scale = lr_scale
        self.min_threshold = min_threshold
        self.before: dict[str, float | list] = {}
        self.after: dict[str, float | list] = {}
        self._was_parameter: dict[str, bool] = {}
        self._own_fire: dict[str, object] = {}  # an instance-level fire that was there before (rare)

    @property
    def learned(self) -> list[str]:
        """The layers whose threshold this constraint trains (all of ``layers``)."""
        return list(self.layers)

    def parameters(self) -> set[str]:
        return {f"{n}.threshold" for n in self.layers}

    def lr_scale(self) -> dict[str, float]:
        return {f"{n}.threshold": self.scale for n in self.layers}

    def attach(self, model: nn.Module) -> None:
        state = get_state(model) if has_state(model) else None
        from snncompress.quant.base import WeightScheme

        for name in self.layers:
            module = model.get_submodule(name)
            if getattr(module, "inhibition", False):
                raise ConfigError(f"layer '{name}' uses inhibition; GPW thresholds do not support it")
        for name in self.layers:
            module = model.get_submodule(name)
            self.before[name] = threshold_value(module)
            was_param = isinstance(module.threshold, nn.Parameter)
            self._was_parameter[name] = was_param
            if not was_param:
                value = module.threshold.detach().clone()
                del module.threshold
                module.threshold = nn.Parameter(value)
            enc = state.tensors.get(f"{name}.threshold") if state is not None else None
            scheme = WeightScheme.from_dict(enc.scheme) if enc is not None else None
            parametrize.register_parametrization(module, "threshold", _Detached(scheme))
            if "fire" in module.__dict__:
                self._own_fire[name] = module.__dict__["fire"]
            module.fire = _make_fire(module, module.fire, self.window, self.width)

    def after_step(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name in self.layers:
                model.get_submodule(name).parametrizations.threshold.original.clamp_(min=self.min_threshold)

    def detach(self, model: nn.Module) -> None:
        state = get_state(model) if has_state(model) else None
        for name in self.layers:
            module = model.get_submodule(name)
            if name in self._own_fire:
                module.fire = self._own_fire.pop(name)
            elif "fire" in module.__dict__:
                del module.fire  # snnTorch's own method again
            if parametrize.is_parametrized(module, "threshold"):
                parametrize.remove_parametrizations(module, "threshold", leave_parametrized=False)
            if not self._was_parameter.get(name, False) and isinstance(module.threshold, nn.Parameter):
                value = module.threshold.detach().clone()
                del module.threshold
                module.register_buffer("threshold", value)
            enc = state.tensors.get(f"{name}.threshold") if state is not None else None
            if enc is not None:
                _reencode(module, state, f"{name}.threshold", enc)
            self.after[name] = threshold_value(module)


def _reencode(module: nn.Module, state, key: str, enc) -> None:
    """Put the learned threshold back on its stored fixed-point grid: value == decode(codes)."""
    from snncompress.quant.base import WeightScheme

    scheme = WeightScheme.from_dict(enc.scheme)
    tensor = module.threshold
    with torch.no_grad():
        flat = tensor.detach().reshape(-1) if tensor.dim() == 0 else tensor.detach()
        new = scheme.encode(flat)
        tensor.copy_(scheme.decode(new).reshape(tensor.shape))
    state.tensors[key] = new
