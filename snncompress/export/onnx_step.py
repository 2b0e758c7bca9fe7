"""One time step of a stepwise model in plain torch ops, with every neuron state passed in and out.

snnTorch neurons keep their state in module attributes and use surrogate-gradient autograd functions,
neither of which an ONNX graph can hold. ``StepModel`` computes exactly what snnTorch computes, op for op
in snnTorch's order (``snntorch/_neurons/leaky.py``, ``synaptic.py``, ``rleaky.py``), with the
Heaviside forward ``H(x) = 1[x > 0]``:

    reset = H(u[t-1] - Vth)                              (snnTorch's delayed reset)
    Leaky     subtract: u[t] = beta*u[t-1] + I[t] - reset*Vth
              zero:     u[t] = beta*((1 - reset)*u[t-1]) + I[t]
    Synaptic  syn[t] = alpha*syn[t-1] + I[t];  u[t] = beta*u[t-1] + syn[t]  (- reset*Vth | - u[t]*reset)
    RLeaky    u[t] = beta*u[t-1] + I[t] + rec(s[t-1])   (- reset*Vth | - reset*u[t])
    RSynaptic syn[t] = alpha*syn[t-1] + I[t] + rec(s[t-1]);  u[t] = beta*u[t-1] + syn[t]  (- reset*Vth | - u[t]*reset)
    Lapicque  u[t] = I[t]*R*(1/(R*C))*dt + (1 - dt/(R*C))*u[t-1]   (- reset*Vth | - reset*u[t])
    Alpha     exc[t] = alpha*exc[t-1] + I[t];  inh[t] = beta*inh[t-1] - I[t];  u[t] = tau_a*(exc[t] + inh[t]),
              tau_a = log(alpha)/(log(beta) - log(alpha)) + 1;  subtract: exc -= reset*Vth,
              inh -= reset*(beta*inh[t-1] - I[t]), u += reset*inh[t-1];  zero: all three times (1 - reset)
    s[t] = H(u[t] - Vth) * graded_spikes_factor
    reset_delay=False: u[t] -= (s[t]/g - reset) * Vth   (subtract)  or  * u[t]  (zero)

(beta and alpha clamped to [0, 1] as snnTorch does). A layer with a stored-membrane quantizer
(``snncompress.models.membrane``) stores ``Q(v[t]) = unit * clamp(round(v/unit), low, high)``, ``unit = Vth/grid``,
``v`` the membrane after reset and before leak, and has no delayed reset of its own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from snncompress.errors import UnsupportedLayerError
from snncompress.export.layout import Leaf
from snncompress.models.membrane import stored_membrane
from snncompress.models.neurons import RESET_NAMES, is_neuron

STATES = {"Leaky": ("mem",), "Synaptic": ("syn", "mem"), "RLeaky": ("spk", "mem"), "RSynaptic": ("spk", "syn", "mem"),
          "Lapicque": ("mem",), "Alpha": ("syn_exc", "syn_inh", "mem")}


def _heaviside(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


class NeuronStep(nn.Module):
    """One neuron layer's step: ``forward(I, *state) -> (spikes, *next_state)``.

    Args:
        name: the layer's qualified name.
        neuron: the snnTorch neuron (its parameters are shared, not copied).
        membrane: the layer's stored-membrane quantizer settings (``levels_low``, ``levels_high``), or None.
    """

    def __init__(self, name: str, neuron: nn.Module, membrane: dict[str, Any] | None):
        super().__init__()
        kind = type(neuron).__name__
        if kind not in STATES:
            raise UnsupportedLayerError(f"neuron layer '{name}' ({kind}) has no ONNX step; supported: "
                                        + ", ".join(STATES))
        if neuron.inhibition or neuron.state_quant:
            feature = "inhibition" if neuron.inhibition else "state_quant"
            raise UnsupportedLayerError(
                f"neuron layer '{name}' ({kind}) uses {feature}, which the ONNX step cannot express"
            )
        self.layer = name
        self.kind = kind
        self.neuron = neuron
        self.mechanism = RESET_NAMES[int(neuron.reset_mechanism_val)]
        self.reset_delay = bool(getattr(neuron, "reset_delay", True))
        self.levels: tuple[int, int] | None = None
        if membrane is not None:
            try:
                self.levels = (int(membrane["levels_low"]), int(membrane["levels_high"]))
                # membrane_quantizers() always gives the unit (the installed level spacing)
                self.register_buffer("unit", torch.tensor(membrane["unit"], dtype=torch.float32), persistent=False)
            except (KeyError, TypeError, ValueError) as exc:
                raise UnsupportedLayerError(
                    f"neuron layer '{name}': membrane quantizer settings lack levels_low/levels_high/unit ({exc})"
                ) from exc

    @property
    def state_names(self) -> tuple[str, ...]:
        return STATES[self.kind]

    def forward(self, current: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.neuron
        thr = n.threshold
        beta = n.beta.clamp(0, 1)
        mem_prev = state[-1]
        # a quantized neuron's reset is already in its stored membrane (models/membrane.py)
        reset = torch.zeros_like(mem_prev) if self.levels is not None else _heaviside(mem_prev - thr)
        extra: tuple[torch.Tensor, ...] = ()
        if self.kind == "Alpha":
            return self._alpha(current, reset, *state)
        if self.kind == "Leaky":
            mem = self._leaky(current, reset, mem_prev, beta)
        elif self.kind == "Lapicque":
            rc = n.R * n.C
            mem = current * n.R * (1 / rc) * n.time_step + (1 - (n.time_step / rc)) * mem_prev
            mem = self._reset_after(mem, reset)
        elif self.kind in ("Synaptic", "RSynaptic"):
            syn = n.alpha.clamp(0, 1) * state[-2] + current
            if self.kind == "RSynaptic":
                syn = syn + self._recurrent(state[0])
            mem = beta * mem_prev + syn
            mem = self._reset_after(mem, reset)
            extra = (syn,)
        else:
            mem = beta * mem_prev + current + self._recurrent(state[0])
            mem = self._reset_after(mem, reset)
        spk = _heaviside(mem - thr) * n.graded_spikes_factor
        if not self.reset_delay:
            do_reset = spk / n.graded_spikes_factor - reset
            if self.mechanism == "subtract":
                mem = mem - do_reset * thr
            elif self.mechanism == "zero":
                mem = mem - do_reset * mem
        if self.levels is not None:
            mem = self._quantize(stored_membrane(n, spk, mem))
        if self.kind in ("RLeaky", "RSynaptic"):
            extra = (spk, *extra)
        return (spk, *extra, mem)

    def _alpha(self, current: torch.Tensor, reset: torch.Tensor, exc_prev: torch.Tensor, inh_prev: torch.Tensor,
               mem_prev: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """snnTorch ``Alpha``: two synaptic traces and a membrane computed from them (no stored membrane)."""
        n = self.neuron
        a, b = n.alpha.clamp(0, 1), n.beta.clamp(0, 1)
        exc = a * exc_prev + current
        inh = b * inh_prev - current
        tau_alpha = torch.log(a) / (torch.log(b) - torch.log(a)) + 1
        mem = tau_alpha * (exc + inh)
        if self.mechanism == "subtract":
            exc = exc - n.threshold * reset
            inh = inh - (b * inh_prev - current) * reset
            mem = mem - (-inh_prev) * reset
        elif self.mechanism == "zero":
            exc = exc - exc * reset
            inh = inh - inh * reset
            mem = mem - mem * reset
        spk = _heaviside(mem - n.threshold) * n.graded_spikes_factor
        return spk, exc, inh, mem

    def _leaky(self, current: torch.Tensor, reset: torch.Tensor, mem_prev: torch.Tensor,
               beta: torch.Tensor) -> torch.Tensor:
        if self.mechanism == "subtract":
            return beta * mem_prev + current - reset * self.neuron.threshold
        if self.mechanism == "zero":
            return beta * ((1 - reset) * mem_prev) + current
        return beta * mem_prev + current

    def _reset_after(self, mem: torch.Tensor, reset: torch.Tensor) -> torch.Tensor:
        """Synaptic's and RLeaky's reset, applied to the freshly integrated membrane."""
        if self.mechanism == "subtract":
            return mem - reset * self.neuron.threshold
        if self.mechanism == "zero":
            return mem - mem * reset if self.kind in ("Synaptic", "RSynaptic") else mem - reset * mem
        return mem

    def _recurrent(self, spk_prev: torch.Tensor) -> torch.Tensor:
        n = self.neuron
        if n.all_to_all:
            return n.recurrent(spk_prev)
        return spk_prev * n.V

    def _quantize(self, u: torch.Tensor) -> torch.Tensor:
        """Levels ``unit`` apart (fixed when the quantizer was installed; see models/membrane.py)."""
        low, high = self.levels
        return self.unit * torch.clamp(torch.round(u / self.unit), low, high)


class SumPool2d(nn.Module):
    """``AvgPool2d(divisor_override=d)`` as a depthwise all-ones convolution (window sum), then ``/ d``.

    The TorchScript ONNX exporter drops ``divisor_override`` and writes a plain average; a sum of
    spikes is exact in any order, so the convolution reproduces the pooling exactly on spikes.
    """

    def __init__(self, name: str, pool: nn.AvgPool2d, channels: int):
        super().__init__()
        if pool.ceil_mode:
            raise UnsupportedLayerError(
                f"layer '{name}' (AvgPool2d) combines divisor_override with ceil_mode"
            )
        kernel = _pair(pool.kernel_size)
        self.stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        self.padding = _pair(pool.padding)
        self.divisor = pool.divisor_override
        self.channels = channels
        self.register_buffer("ones", torch.ones(channels, 1, *kernel), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = F.conv2d(x, self.ones, stride=self.stride, padding=self.padding, groups=self.channels)
        return total if self.divisor == 1 else total / self.divisor


def _pair(value: Any) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value), int(value))


class PaddedConv(nn.Module):
    """A convolution with string padding (``"same"``, ``"valid"``) as an explicit pad (zeros, or the layer's
    ``padding_mode``), then the convolution.

    The TorchScript exporter writes ``padding="same"`` as ONNX ``auto_pad=SAME_UPPER``, which onnxruntime refuses
    with a dilation; explicit pads (torch's amounts: :func:`snncompress.models.layers.conv_padding`) run
    everywhere and put the odd zero of an even kernel where torch does.
    """

    def __init__(self, conv: nn.Conv1d | nn.Conv2d):
        super().__init__()
        from snncompress.models.layers import conv_padding

        before, after = conv_padding(conv)
        self.conv = conv  # shared: the step computes with the layer's own weights
        self.pads = [p for b, a in zip(reversed(before), reversed(after), strict=True) for p in (b, a)]
        self.mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d if isinstance(self.conv, nn.Conv2d) else F.conv1d
        x = F.pad(x, self.pads, mode=self.mode) if any(self.pads) else x
        return conv(x, self.conv.weight, self.conv.bias, self.conv.stride, 0, self.conv.dilation, self.conv.groups)


def _step_layer(leaf: Leaf) -> nn.Module:
    """The module to call for a non-neuron layer (itself, unless ONNX cannot export it faithfully)."""
    module = leaf.module
    if isinstance(module, nn.AvgPool2d) and module.divisor_override is not None:
        return SumPool2d(leaf.name, module, int(leaf.in_shape[0]))
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and isinstance(module.padding, str):
        return PaddedConv(module)
    return module


class StepModel(nn.Module):
    """A stepwise Sequential as ``forward(x, *states) -> (output, *next_states)``; states in layer order."""

    def __init__(self, leaves: list[Leaf], membrane: dict[str, dict[str, Any]]):
        super().__init__()
        self.steps = nn.ModuleList()
        self.state_layout: list[dict[str, Any]] = []
        for leaf in leaves:
            if is_neuron(leaf.module):
                step = NeuronStep(leaf.name, leaf.module, membrane.get(leaf.name))
                self.steps.append(step)
                for state in step.state_names:
                    self.state_layout.append({"layer": leaf.name, "neuron": step.kind, "state": state,
                                              "shape": list(leaf.in_shape)})
            else:
                self.steps.append(_step_layer(leaf))

    def forward(self, x: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out_states: list[torch.Tensor] = []
        k = 0
        for step in self.steps:
            if isinstance(step, NeuronStep):
                n = len(step.state_names)
                result = step(x, *states[k:k + n])
                k += n
                x = result[0]
                out_states.extend(result[1:])
            else:
                x = step(x)
        return (x, *out_states)
