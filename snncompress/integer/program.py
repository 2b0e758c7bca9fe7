"""Compile a quantized stepwise model into an integer-only program.

Every activation is an int64 tensor ``a`` with a power-of-two scale, value ``a * 2**-f`` (``f``
fraction bits; spikes have ``f = 0``, a static input ``x`` is ``x * 2**f`` for the fewest ``f`` that make
it integer). The ops, and the equations :mod:`snncompress.integer.execute` runs:

* **synaptic** (Linear, Conv1d, Conv2d): ``acc = sum q * a`` over the integer weight levels ``q``
  (:mod:`snncompress.integer.levels`; a power-of-two level is a shift), then requantization with one
  integer multiplier per output channel, ``y = acc * M[c] + b[c]``: ``M[c] = step[c] * 2**(f_out - f_in)``
  (``mantissa << shift``: a float32 scale has a 24-bit mantissa, a power-of-two step a mantissa of 1)
  and ``b = bias * 2**f_out``, with ``f_out`` the fewest fraction bits that make both exact.
* **max pool** (max of integers), **sum pool** (average pooling: the window sum, ``f += log2(count)``,
  so the window count must be a power of two), **flatten**, **identity** (Dropout in eval).
* **neuron** (Leaky, Synaptic, RLeaky with a quantized stored membrane), in fixed point with ``F``
  fraction bits (the membrane ``u`` is ``u_fx * 2**-F``), stored membrane ``L`` an integer level:

      I      = a << (F - f_in)
      syn    = round(alpha_m * syn / 2**alpha_shift) + I                (Synaptic; alpha = alpha_m * 2**-alpha_shift)
      u      = L * K + I   (Leaky)  |  L * K + syn  (Synaptic)  |  L * K + I + rec(s_prev)  (RLeaky)
      s      = u > Vth_fx
      v      = u - s * R_fx   (subtract)  |  u * (1 - s)  (zero)  |  u  (none)
      L      = clip(round(v / unit_fx), low, high)                      (round half to even)

  with ``K = beta * unit * 2**F`` (the leak of the stored level: a shift for ``beta = 2**-k`` and a
  power-of-two unit), ``Vth_fx = Vth * 2**F``, ``unit_fx = unit * 2**F`` (the membrane levels'
  spacing; a shift when it is a power of two), ``R`` the reset amount the torch model subtracts from
  the stored membrane (``Vth / beta`` for snnTorch's delayed subtract reset, ``Vth`` without the delay;
  ``snncompress.models.membrane``). ``F`` is the fewest fraction bits that hold every constant exactly.

Every constant is exact (no rounding anywhere except the stored membrane's ``round``, which is the
quantizer itself, and the Synaptic current's ``alpha * syn``, rounded to ``2**-F`` when alpha has more
fraction bits than that register). The compile step uses float64 only for exact operations (products
of two float32 values, powers of two). Bounds on every intermediate are checked here so int64 never
overflows; a layer that needs more than 62 bits is refused with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from snncompress.errors import UnsupportedLayerError
from snncompress.integer.levels import fraction_bits, integer_levels, to_fixed
from snncompress.models.neurons import RESET_NAMES, is_neuron
from snncompress.state import get_state

LIMIT = 1 << 62  # every intermediate stays below this in magnitude
SUPPORTED = ("Linear, Conv1d, Conv2d, MaxPool1d/2d, AvgPool1d/2d (power-of-two windows), Flatten, Dropout, "
             "Identity and Leaky / Synaptic / RLeaky neurons with a quantized membrane")


@dataclass
class SynapticOp:
    name: str
    kind: str  # linear, conv1d, conv2d
    weight: np.ndarray  # int64 levels, torch layout [out, in / groups, *kernel]
    multiplier: np.ndarray  # int64 [out]
    bias: np.ndarray  # int64 [out]
    in_frac: int
    out_frac: int
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()  # zeros before each spatial dim (and after it, unless padding_end says)
    dilation: tuple[int, ...] = ()
    groups: int = 1
    float32_bits: int = 0  # significant bits torch's float32 path needs here; <= 24: it cannot round
    op: str = "synaptic"
    padding_end: tuple[int, ...] = ()  # zeros after each spatial dim where they differ (padding="same", even kernel)


@dataclass
class PoolOp:
    name: str
    kind: str  # max, sum
    dims: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    in_frac: int
    out_frac: int
    op: str = "pool"


@dataclass
class ReshapeOp:
    name: str
    kind: str  # flatten, identity
    start_dim: int = 1
    end_dim: int = -1
    in_frac: int = 0
    out_frac: int = 0
    op: str = "reshape"


@dataclass
class NeuronOp:
    name: str
    neuron: str  # Leaky, Synaptic, RLeaky
    mechanism: str  # subtract, zero, none
    frac: int  # F
    in_frac: int
    low: int
    high: int
    leak: np.ndarray  # K, int64, the beta parameter's shape
    threshold: np.ndarray
    reset: np.ndarray
    unit: np.ndarray
    alpha_mult: np.ndarray | None = None  # Synaptic
    alpha_shift: int = 0
    rec_weight: np.ndarray | None = None  # RLeaky all-to-all, at 2**-F: [n, n]
    rec_bias: np.ndarray | None = None
    rec_v: np.ndarray | None = None  # RLeaky one-to-one, at 2**-F
    out_frac: int = 0
    float32_bits: int = 0  # significant bits torch's float32 path needs here (99: it can round anyway)
    op: str = "neuron"


@dataclass
class Program:
    """The integer-only program of a model: its ops in order, the input format, what it was built for."""

    ops: list[Any]
    input_frac: int
    time_steps: int
    notes: list[str] = field(default_factory=list)
    input_bound: int = 0  # the largest |x_int| the bounds were checked for

    def check_input(self, frac: int, bound: int, steps: int) -> None:
        """Raise unless inputs of ``frac`` fraction bits up to ``bound`` over ``steps`` steps fit this program.

        Raises:
            InputError: finer inputs, larger inputs or more steps than its int64 bounds were checked for.
        """
        from snncompress.errors import InputError

        if frac > self.input_frac:
            raise InputError(f"the inputs need {frac} fraction bits; this program reads {self.input_frac}")
        if bound << (self.input_frac - frac) > self.input_bound or steps > self.time_steps:
            raise InputError(f"the inputs (max |x_int| {bound << (self.input_frac - frac)}, {steps} steps) exceed "
                             f"what this program was checked for ({self.input_bound}, {self.time_steps} steps)")

    @property
    def neuron_layers(self) -> list[str]:
        return [op.name for op in self.ops if op.op == "neuron"]


def _tuple(value: Any, dims: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * dims


def conv_padding(name: str, module: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Zeros before and after each spatial dim of a convolution's input, as torch pads it (``padding="same"``:
    the odd zero of an even kernel after; :func:`snncompress.models.layers.conv_padding`).

    Raises:
        UnsupportedLayerError: a string padding torch does not have, naming the layer.
    """
    from snncompress.models.layers import conv_padding as amounts

    if isinstance(module.padding, str) and module.padding not in ("same", "valid"):
        raise UnsupportedLayerError(f"layer '{name}' ({type(module).__name__}) has padding '{module.padding}'; "
                                    "the reference pads with numbers, 'same' or 'valid'")
    return amounts(module)


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().astype(np.float64)


def _check(bound: int, what: str) -> None:
    if bound >= LIMIT:
        raise UnsupportedLayerError(f"{what} can reach 2^{bound.bit_length() - 1}, beyond a 62-bit integer")


class _Compiler:
    def __init__(self, model: nn.Module, input_frac: int, input_bound: int, time_steps: int):
        self.model = model
        self.state = get_state(model)
        self.frac = input_frac
        self.bound = input_bound  # max |a| of the current activation
        self.time_steps = time_steps
        self.membranes = {k: v for k, v in self.state.neurons.items() if "membrane" in v}
        self.notes: list[str] = []

    def levels(self, name: str, tensor: torch.Tensor, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Integer levels and step of a state-dict tensor: from its codes, or exact fixed point of its floats."""
        enc = self.state.tensors.get(name)
        if enc is not None:
            params = {k: v.detach().cpu().numpy() for k, v in enc.params.items()}
            q, step = integer_levels(enc.scheme, enc.codes.cpu().numpy(), params, what)
            return q.reshape(tuple(tensor.shape)), step
        values = _f64(tensor)
        f = fraction_bits(values)
        return to_fixed(values, f, what), np.asarray(np.ldexp(1.0, -f))

    def synaptic(self, name: str, module: nn.Module) -> SynapticOp:
        kind = type(module).__name__.lower()
        q, step = self.levels(f"{name}.weight", module.weight, f"layer '{name}' weight")
        out = q.shape[0]
        step = np.broadcast_to(step, (out,)) if step.ndim == 0 else step.reshape(out)
        multiplier_real = np.ldexp(step, -self.frac)  # exact: a power-of-two shift
        bias_real = _f64(module.bias) if module.bias is not None else np.zeros(out)
        out_frac = max(fraction_bits(multiplier_real), fraction_bits(bias_real))
        multiplier = to_fixed(multiplier_real, out_frac, f"layer '{name}' requantization multiplier")
        bias = to_fixed(bias_real, out_frac, f"layer '{name}' bias")
        per_channel = np.abs(q).reshape(out, -1).sum(axis=1)
        acc_bound = int(per_channel.max()) * self.bound if out else 0
        _check(acc_bound, f"layer '{name}': the accumulator")
        bound = max((int(p) * self.bound * abs(int(m)) + abs(int(b)) for p, m, b in
                     zip(per_channel, multiplier, bias, strict=True)), default=0)
        _check(bound, f"layer '{name}': the requantized output")
        # torch computes with fl32(q * step) and float32 sums: exact when every weight and every partial sum
        # is a multiple of 2**-out_frac below 2**24 of them (any order of summation)
        steps_fx = to_fixed(step, fraction_bits(step), f"layer '{name}' step")
        odd = int(max((int(v) >> ((int(v) & -int(v)).bit_length() - 1) for v in np.abs(steps_fx) if v), default=1))
        float32_bits = max(bound.bit_length(), (int(np.abs(q).max(initial=0)) * odd).bit_length())
        if kind == "linear":
            op = SynapticOp(name, kind, q, multiplier, bias, self.frac, out_frac, float32_bits=float32_bits)
        else:
            if module.padding_mode != "zeros":
                raise UnsupportedLayerError(f"layer '{name}' pads with '{module.padding_mode}'; the reference "
                                            "pads with zeros only")
            dims = 1 if kind == "conv1d" else 2
            before, after = conv_padding(name, module)
            op = SynapticOp(name, kind, q, multiplier, bias, self.frac, out_frac,
                            stride=_tuple(module.stride, dims), padding=before,
                            dilation=_tuple(module.dilation, dims), groups=int(module.groups),
                            float32_bits=float32_bits, padding_end=after if after != before else ())
        self.frac, self.bound = out_frac, bound
        return op

    def pool(self, name: str, module: nn.Module) -> PoolOp:
        dims = 1 if type(module).__name__.endswith("1d") else 2
        if module.ceil_mode:
            raise UnsupportedLayerError(f"layer '{name}' ({type(module).__name__}) uses ceil_mode")
        kernel = _tuple(module.kernel_size, dims)
        stride = _tuple(module.stride if module.stride is not None else module.kernel_size, dims)
        padding = _tuple(module.padding, dims)
        in_frac = self.frac
        if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
            return PoolOp(name, "max", dims, kernel, stride, padding, _tuple(module.dilation, dims), in_frac, in_frac)
        if any(padding) and not module.count_include_pad:
            raise UnsupportedLayerError(f"layer '{name}' averages padded windows without counting the padding")
        divisor = getattr(module, "divisor_override", None) or math.prod(kernel)
        if divisor & (divisor - 1):
            raise UnsupportedLayerError(f"layer '{name}' ({type(module).__name__}) divides by {divisor}, which "
                                        "has no exact fixed-point form: use a power-of-two window")
        count = math.prod(kernel)
        self.bound *= count
        self.frac = in_frac + divisor.bit_length() - 1
        return PoolOp(name, "sum", dims, kernel, stride, padding, (1,) * dims, in_frac, self.frac)

    def neuron(self, name: str, module: nn.Module) -> NeuronOp:
        kind = type(module).__name__
        label = f"neuron layer '{name}' ({kind})"
        if kind not in ("Leaky", "Synaptic", "RLeaky"):
            raise UnsupportedLayerError(f"{label}: the reference runs Leaky, Synaptic and RLeaky")
        settings = self.membranes.get(name)
        if settings is None:
            raise UnsupportedLayerError(f"{label} keeps an fp32 membrane; quantize it (--membrane-quant ternary "
                                        "or int<k>) to run it integer-only")
        if module.inhibition or module.state_quant:
            raise UnsupportedLayerError(f"{label} uses {'inhibition' if module.inhibition else 'state_quant'}")
        if float(module.graded_spikes_factor) != 1.0:
            raise UnsupportedLayerError(f"{label} has graded spikes (factor {float(module.graded_spikes_factor)})")
        mechanism = RESET_NAMES[int(module.reset_mechanism_val)]
        reset_delay = bool(getattr(module, "reset_delay", True))
        membrane = settings["membrane"]
        low, high = int(membrane["levels_low"]), int(membrane["levels_high"])
        grid = int(settings.get("membrane_grid", 1))
        unit_raw = settings.get("membrane_unit")
        if unit_raw is None:
            unit_raw = (module.threshold.detach().double() / grid).tolist()
        unit = np.asarray(unit_raw, dtype=np.float64).astype(np.float32)  # the torch path computes in float32
        notes = []
        if not np.array_equal(unit.astype(np.float64), np.asarray(unit_raw, dtype=np.float64)):
            notes.append(f"{label}: the membrane unit {unit_raw} is not a float32 value; the torch model and the "
                         "reference both use its float32 rounding")
        beta = module.beta.detach().cpu().to(torch.float32).clamp(0, 1).numpy()
        threshold = module.threshold.detach().cpu().to(torch.float32).numpy()
        if mechanism == "subtract":
            if reset_delay:
                # what snncompress.models.membrane.stored_membrane subtracts: the float32 quotient torch computes
                with np.errstate(divide="ignore", invalid="ignore"):
                    reset = np.where(beta > 0, threshold / np.where(beta > 0, beta, np.float32(1)), np.float32(0))
                reset = reset.astype(np.float32)
            else:
                reset = threshold
        else:
            reset = np.zeros((), dtype=np.float32)
        leak_real = beta.astype(np.float64) * unit.astype(np.float64)  # exact: two float32 values
        reals = {"leak": leak_real, "threshold": threshold.astype(np.float64), "reset": reset.astype(np.float64),
                 "unit": unit.astype(np.float64)}
        frac = max([self.frac] + [fraction_bits(v) for v in reals.values()])
        alpha_mult, alpha_shift = None, 0
        rec_real: dict[str, np.ndarray] = {}
        if kind == "Synaptic":
            alpha = module.alpha.detach().cpu().to(torch.float32).clamp(0, 1).numpy().astype(np.float64)
            alpha_shift = fraction_bits(alpha)
            alpha_mult = to_fixed(alpha, alpha_shift, f"{label} alpha")
        if kind == "RLeaky":
            if module.all_to_all:
                if module.linear_features is None or not isinstance(module.recurrent, nn.Linear):
                    raise UnsupportedLayerError(f"{label}: the reference runs linear recurrence only")
                if f"{name}.recurrent.weight" in self.state.tensors:
                    q, step = self.levels(f"{name}.recurrent.weight", module.recurrent.weight,
                                          f"{label} recurrent weight")
                    if not np.all(np.abs(q) < 2**29):  # q * (a float32 step) stays exact in float64
                        raise UnsupportedLayerError(f"{label}: recurrent weight levels beyond 29 bits")
                    rows = np.broadcast_to(step, (q.shape[0],)) if step.ndim == 0 else step.reshape(-1)
                    rec_real["weight"] = q.astype(np.float64) * rows[:, None]
                else:
                    rec_real["weight"] = _f64(module.recurrent.weight)
                rec_real["bias"] = (_f64(module.recurrent.bias) if module.recurrent.bias is not None
                                    else np.zeros(module.recurrent.weight.shape[0]))
            else:
                rec_real["v"] = _f64(module.V)
            frac = max([frac] + [fraction_bits(v) for v in rec_real.values()])
        level = max(abs(low), abs(high))
        a_max = float(module.alpha.detach().clamp(0, 1).max()) if kind == "Synaptic" else 0.0
        syn_steps = self.time_steps if a_max >= 1 else min(self.time_steps, math.ceil(1 / (1 - a_max)) + 1)

        def at(frac: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, int]:
            """The constants at ``2**-frac`` and the bounds of the input current and of the membrane."""
            fixed = {k: to_fixed(v, frac, f"{label} {k}") for k, v in reals.items()}
            rec = {k: to_fixed(v, frac, f"{label} recurrent {k}") for k, v in rec_real.items()}
            current = self.bound << (frac - self.frac)
            drive = current * syn_steps if kind == "Synaptic" else current  # alpha * syn: wider than 64 bits
            if "weight" in rec:
                drive += int(np.abs(rec["weight"]).sum(axis=1).max()) + int(np.abs(rec["bias"]).max())
            if "v" in rec:
                drive += int(np.abs(rec["v"]).max())
            total = int(np.abs(fixed["leak"]).max()) * level + drive + int(np.abs(fixed["reset"]).max())
            return fixed, rec, current, total

        fixed, rec, current, total = at(frac)
        rounds_syn = False
        if kind == "Synaptic" and alpha_shift:
            # alpha * syn gains alpha_shift fraction bits a step: give the register what T steps need, as far
            # as 62 bits allow; beyond that it rounds (half to even) at 2**-F, where torch rounds in float32
            want = alpha_shift * max(self.time_steps - 1, 0)
            extra = max(0, min(want, 61 - max(total, 1).bit_length()))
            if extra:
                frac += extra
                fixed, rec, current, total = at(frac)
            rounds_syn = extra < want
            if rounds_syn:
                notes.append(f"{label}: the synaptic current is rounded to 2^-{frac} each step (alpha needs "
                             f"{alpha_shift} more fraction bits a step); torch rounds it in float32 instead, so "
                             "a spike can differ where a membrane lands within that rounding of a boundary")
        if np.any(fixed["unit"] <= 0):
            raise UnsupportedLayerError(f"{label}: the membrane unit must be positive")
        _check(current, f"{label}: the input current")
        _check(total, f"{label}: the membrane")
        # torch's float32 step is exact when every value is a multiple of 2**-F below 2**24 of them and v / unit
        # divides by a power of two; otherwise it can round (99: not certified whatever the bits)
        unit_pow2 = bool(np.all((fixed["unit"] & (fixed["unit"] - 1)) == 0))
        float32_bits = total.bit_length() if unit_pow2 and not rounds_syn else 99
        op = NeuronOp(name, kind, mechanism, frac, self.frac, low, high, fixed["leak"], fixed["threshold"],
                      fixed["reset"], fixed["unit"], alpha_mult, alpha_shift, rec.get("weight"), rec.get("bias"),
                      rec.get("v"), float32_bits=float32_bits)
        self.frac, self.bound = 0, 1
        self.notes = notes
        return op


def compile_program(model: nn.Module, input_frac: int, input_bound: int, time_steps: int) -> Program:
    """The integer-only program of a quantized stepwise model.

    Args:
        model: an ``nn.Sequential`` of supported layers (``snncompress.load_model`` of a compressed file).
        input_frac: fraction bits of the integer input (``x_int = x * 2**input_frac``).
        input_bound: the largest ``|x_int|`` it will see (bounds the int64 intermediates).
        time_steps: the most steps it will run (bounds the Synaptic current).

    Raises:
        UnsupportedLayerError: a layer the reference lacks, an fp32 membrane, a value with no exact
            fixed-point form or one beyond 62 bits -- naming the layer and why.
    """
    from snncompress.export.layout import leaf_layers, require_sequential
    from snncompress.models.spatial import require_no_runtime_masks

    require_no_runtime_masks(model, "the integer-only reference")

    require_sequential(model, "integer-only execution")
    compiler = _Compiler(model, input_frac, input_bound, time_steps)
    ops: list[Any] = []
    notes: list[str] = []
    for name, module in leaf_layers(model):
        if is_neuron(module):
            ops.append(compiler.neuron(name, module))
            notes.extend(compiler.notes)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            ops.append(compiler.synaptic(name, module))
        elif isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
            ops.append(compiler.pool(name, module))
        elif isinstance(module, nn.Flatten):
            ops.append(ReshapeOp(name, "flatten", int(module.start_dim), int(module.end_dim),
                                 compiler.frac, compiler.frac))
        elif isinstance(module, (nn.Dropout, nn.Identity)):
            ops.append(ReshapeOp(name, "identity", in_frac=compiler.frac, out_frac=compiler.frac))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            raise UnsupportedLayerError(
                f"layer '{name}' ({type(module).__name__}) is a float normalisation; fold it into the layer "
                "before it (the quantize pass folds Conv/Linear + BatchNorm) and quantize again")
        else:
            raise UnsupportedLayerError(f"layer '{name}' ({type(module).__name__}) has no integer-only reference "
                                        f"step; supported: {SUPPORTED}")
    if not any(op.op == "neuron" for op in ops):
        raise UnsupportedLayerError("the model has no neuron layers to run")
    return Program(ops, input_frac, time_steps, notes, input_bound)


def input_format(x: torch.Tensor) -> tuple[int, int]:
    """``(fraction bits, max |x_int|)`` of the inputs ``x``: the fewest ``f`` with ``x * 2**f`` integer.

    Raises:
        UnsupportedLayerError: the inputs are not fixed-point numbers within 32 fraction bits.
    """
    values = x.detach().cpu().to(torch.float32).numpy().astype(np.float64)
    try:
        f = fraction_bits(values, limit=32)
    except UnsupportedLayerError:
        raise UnsupportedLayerError("the input values are not fixed-point numbers with at most 32 fraction bits; "
                                    "integer-only execution needs integer or fixed-point inputs") from None
    bound = int(np.abs(np.ldexp(values, f)).max()) if values.size else 0
    return f, bound
