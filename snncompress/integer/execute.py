"""Run an integer-only program (:mod:`snncompress.integer.program`) on numpy int64 arrays.

No floating point anywhere in a step: convolutions are integer sums over sliding windows, the
requantization an integer multiply and add, the membrane an integer in fixed point, the stored
membrane's rounding an integer division rounded half to even (a shift when the unit is a power of two).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from snncompress.integer.program import NeuronOp, PoolOp, Program, ReshapeOp, SynapticOp


def div_round_half_even(v: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``round(v / d)`` for int64 ``v`` and positive int64 ``d``, ties to even (``torch.round``'s rule)."""
    q = np.floor_divide(v, d)
    r2 = 2 * (v - q * d)  # in [0, 2d)
    up = (r2 > d) | ((r2 == d) & (q % 2 == 1))
    return q + up


def shift_round_half_even(v: np.ndarray, shift: int) -> np.ndarray:
    """``round(v / 2**shift)``, ties to even."""
    if shift == 0:
        return v
    return div_round_half_even(v, np.int64(1) << np.int64(shift))


def mul_shift_round(v: np.ndarray, m: np.ndarray, shift: int) -> np.ndarray:
    """``round(v * m / 2**shift)`` exactly, ties to even, for int64 ``v`` and ``0 <= m <= 2**shift``.

    The product can need more than 64 bits (a 24-bit alpha mantissa times a 62-bit current), so it is
    formed in Python integers (hardware: a wide multiplier); the result is no larger than ``|v|``.
    """
    if shift == 0:
        return v * m
    prod = v.astype(object) * np.asarray(m).astype(object)
    d = 1 << shift
    q = prod // d
    r2 = 2 * (prod - q * d)
    up = (r2 > d) | ((r2 == d) & (q % 2 == 1))
    return (q + up).astype(np.int64)


def _windows(x: np.ndarray, kernel, stride, padding, dilation, fill, padding_end=()) -> np.ndarray:
    """``[B, C, *out, *kernel]`` windows of ``x`` ``[B, C, *spatial]`` (padded with ``fill``: ``padding``
    before each spatial dim, ``padding_end`` after it, ``padding`` again when empty)."""
    dims = len(kernel)
    after = tuple(padding_end) or tuple(padding)
    pad = [(0, 0), (0, 0)] + [(p, e) for p, e in zip(padding, after, strict=True)]
    if any(padding) or any(after):
        x = np.pad(x, pad, constant_values=fill)
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True))
    w = sliding_window_view(x, span, axis=tuple(range(2, 2 + dims)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride) + tuple(
        slice(None, None, d) for d in dilation)
    return w[index]


def synaptic(op: SynapticOp, a: np.ndarray) -> np.ndarray:
    """``acc * M[c] + b[c]`` with ``acc`` the integer sum of weight levels times inputs."""
    if op.kind == "linear":
        acc = a @ op.weight.T
        return acc * op.multiplier + op.bias
    dims = len(op.stride)
    kernel = op.weight.shape[2:]
    win = _windows(a, kernel, op.stride, op.padding, op.dilation, 0, op.padding_end)  # [B, Cin, *out, *k]
    groups = op.groups
    cin = a.shape[1] // groups
    cout = op.weight.shape[0] // groups
    outs = []
    for g in range(groups):
        part = win[:, g * cin:(g + 1) * cin]  # [B, cin, *out, *k]
        weight = op.weight[g * cout:(g + 1) * cout]  # [cout, cin, *k]
        axes_x = [1] + list(range(2 + dims, 2 + 2 * dims))
        outs.append(np.moveaxis(np.tensordot(part, weight, axes=(axes_x, [1] + list(range(2, 2 + dims)))), -1, 1))
    acc = np.concatenate(outs, axis=1) if groups > 1 else outs[0]
    shape = (1, -1) + (1,) * dims
    return acc * op.multiplier.reshape(shape) + op.bias.reshape(shape)


def pool(op: PoolOp, a: np.ndarray) -> np.ndarray:
    lowest = np.iinfo(np.int64).min
    win = _windows(a, op.kernel, op.stride, op.padding, op.dilation, lowest if op.kind == "max" else 0)
    axes = tuple(range(-op.dims, 0))
    return win.max(axis=axes) if op.kind == "max" else win.sum(axis=axes)


def reshape(op: ReshapeOp, a: np.ndarray) -> np.ndarray:
    if op.kind == "identity":
        return a
    end = op.end_dim if op.end_dim >= 0 else a.ndim + op.end_dim
    return a.reshape(a.shape[:op.start_dim] + (-1,) + a.shape[end + 1:])


class NeuronState:
    """One neuron layer's integer state: stored level ``L``, Synaptic current ``syn``, RLeaky's last spikes."""

    def __init__(self):
        self.level: np.ndarray | None = None
        self.syn: np.ndarray | None = None
        self.spikes: np.ndarray | None = None


def neuron(op: NeuronOp, a: np.ndarray, st: NeuronState) -> np.ndarray:
    """One step of a quantized-membrane neuron layer (equations in :mod:`snncompress.integer.program`)."""
    if st.level is None:
        st.level = np.zeros(a.shape, dtype=np.int64)
        st.syn = np.zeros(a.shape, dtype=np.int64)
        st.spikes = np.zeros(a.shape, dtype=np.int64)
    current = a << np.int64(op.frac - op.in_frac)
    u = st.level * op.leak
    if op.neuron == "Synaptic":
        st.syn = mul_shift_round(st.syn, op.alpha_mult, op.alpha_shift) + current
        u = u + st.syn
    else:
        u = u + current
    if op.neuron == "RLeaky":
        if op.rec_weight is not None:
            u = u + (st.spikes @ op.rec_weight.T + op.rec_bias)
        else:
            u = u + st.spikes * op.rec_v
    spikes = (u > op.threshold).astype(np.int64)
    if op.mechanism == "subtract":
        v = u - spikes * op.reset
    elif op.mechanism == "zero":
        v = u * (1 - spikes)
    else:
        v = u
    st.level = np.clip(div_round_half_even(v, op.unit), op.low, op.high)
    st.spikes = spikes
    return spikes


def run_program(program: Program, x: np.ndarray, *, is_sequence: bool, time_steps: int) -> dict[str, np.ndarray]:
    """Run a batch; returns each neuron layer's spikes ``[T, B, ...]`` (uint8).

    Args:
        program: the compiled program.
        x: int64 inputs ``[B, ...]`` (static, presented every step) or ``[B, T, ...]`` (a sequence),
            already in the program's input format (``x * 2**program.input_frac``).
        is_sequence: whether ``x`` carries time in dim 1.
        time_steps: steps for a static input.
    """
    states = {op.name: NeuronState() for op in program.ops if op.op == "neuron"}
    steps = x.shape[1] if is_sequence else time_steps
    out: dict[str, list[np.ndarray]] = {name: [] for name in states}
    for t in range(steps):
        a = x[:, t] if is_sequence else x
        for op in program.ops:
            if op.op == "synaptic":
                a = synaptic(op, a)
            elif op.op == "pool":
                a = pool(op, a)
            elif op.op == "reshape":
                a = reshape(op, a)
            else:
                a = neuron(op, a, states[op.name])
                out[op.name].append(a.astype(np.uint8))
    return {name: np.stack(v) for name, v in out.items()}
