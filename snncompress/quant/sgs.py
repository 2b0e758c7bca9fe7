"""Stacked Gradient Surrogation for integer membrane levels (SpQuant §4.2.1, Eq. 11-13).

The quantizer ``Q(t) = clip(round(t), low, high)`` is a staircase with one unit step at each
level boundary ``b_k = k + 0.5``, ``k = low .. high-1``. SGS replaces each step by a sigmoid of
temperature ``T`` (the smoothness), so the backward pass uses

    G(t) = dQ*/dt = sum_k (1/T) * sigmoid'((t - b_k) / T),   sigmoid'(z) = sigmoid(z) * (1 - sigmoid(z))

(the SpQuant authors' code: one sigmoid derivative per step, their multiplier 2.0 being 1/T).

Summing term by term costs a pass over the data per level, and snnTorch's ``state_quant`` even
builds an ``[N, levels]`` tensor. Here G is tabulated once per ``(low, high, T)`` in float64 and
read back with the nearest table entry (``res`` entries per unit of t):

* direct table: t in ``[low - R, high + R]``, ``R`` the tail radius past which every remaining
  boundary adds less than ``eps``; beyond the table the edge value is used.
* folded table (many levels): G is symmetric about the centre of ``[low, high]`` and, farther than
  ``R`` from both ends, periodic with period 1 up to ``eps``. The table covers ``a`` in
  ``[-R, R + 1]`` (``a`` = distance above the low end) and t is mapped there:
  ``a = (high - low)/2 - |t - centre|``, then ``a -= floor(max(a - R, 0))``.

Table sizes do not depend on N or on the number of levels: 45 057 entries (176 KiB) for ternary
and 71 681 for int4 at the default T = 0.5, at most about 4e5 over the allowed T in [0.01, 10]. The
backward pass runs in cache-sized chunks through one reused scratch buffer (float index, turned
into int32 in place), so a forward + backward pass allocates only its output and the input's
gradient, whatever the number of levels.

Error bound, worst case over t (:attr:`SgsTable.max_error`)::

    |G_table - G| <= (1/2 + n 2**-23) h max|G'| + 6 eps + 2**-22 max G + 2**-23 t_max max|G'|

nearest entry (``h = 1/res``, float32 index arithmetic); the tails (``sigmoid'(z) <= e**-|z|``,
a geometric series; ``eps = 1e-8``); float32 storage; and, on the folded path, the float32
resolution of t itself (``t_max`` the largest ``|t|`` inside the table). At the default T = 0.5 the
bound is about 1.4e-4, against ``max G`` = 0.79 (ternary) to 1.0 (wider ranges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from snncompress.quant import fused

RES_PER_T = 1024  # table entries per unit of t/T: h = T / 1024 (rounded to an even count per unit)
TAIL_EPS = 1e-8
MAX_DIRECT_ENTRIES = 1 << 17
CHUNK = 1 << 17  # elements per chunk: scratch (512 KiB) plus table fit a 1 MiB L2


def sgs_surrogate_exact(t: torch.Tensor, low: int, high: int, smoothness: float) -> torch.Tensor:
    """The full SGS sum ``G(t)`` in float64, one term per level boundary (reference; O(levels) passes).

    Memory stays O(N): the terms are accumulated, never stacked.
    """
    t64 = t.detach().to(torch.float64)
    out = torch.zeros_like(t64)
    for k in range(low, high):
        s = torch.sigmoid((t64 - (k + 0.5)) / smoothness)
        out += s * (1 - s)
    return out / smoothness


@dataclass(frozen=True)
class SgsTable:
    """Tabulated SGS surrogate for one ``(low, high, smoothness)``; build it with :func:`sgs_table`."""

    low: int
    high: int
    smoothness: float
    table: torch.Tensor  # float32, 1-D
    entries_per_unit: int
    tail_radius: int
    folded: bool
    max_error: float

    def lookup(
        self, u: torch.Tensor, inv_threshold: float = 1.0, multiply_by: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``G(u * inv_threshold)`` (times ``multiply_by`` if given), a new tensor shaped like ``u``.

        NaN where ``u`` is NaN. ``multiply_by`` must have ``u``'s shape. With one intra-op thread
        the work runs in chunks of ``CHUNK`` through a cache-resident scratch buffer (or, for a
        direct table with ``multiply_by``, in the fused kernel of :mod:`snncompress.quant.fused`
        when numba is installed: one pass, the index in float64); with more, in one
        chunk, so that each step is a single parallel op (on a loaded machine every parallel op
        can wait a whole scheduler slice for its threads).
        """
        if u.dtype not in (torch.float32, torch.float64):  # half types: index arithmetic in float32
            g = None if multiply_by is None else multiply_by.float()
            return self.lookup(u.float(), inv_threshold, g).to(u.dtype)
        one_thread = torch.get_num_threads() == 1 and u.device.type == "cpu"
        offset = (self.tail_radius - self.low) * self.entries_per_unit + 0.5  # direct table: entry of t = 0, +0.5
        if one_thread and multiply_by is not None and not self.folded:  # one fused pass, when numba is here
            fused_out = fused.gather_times_grad(u, multiply_by, self.table, self.entries_per_unit * inv_threshold,
                                                offset)
            if fused_out is not None:
                return fused_out
        flat_u = u.reshape(-1)
        out = torch.empty(flat_u.shape, dtype=u.dtype, device=u.device)
        if not flat_u.numel():
            return out.view(u.shape)
        chunk = CHUNK if one_thread else flat_u.numel()
        table = self.table.to(device=u.device, dtype=u.dtype)
        scratch = torch.empty(min(chunk, flat_u.numel()), dtype=u.dtype, device=u.device)
        parts_m = [None] * math.ceil(flat_u.numel() / chunk)
        if multiply_by is not None:
            parts_m = multiply_by.reshape(-1).split(chunk)
        offset = torch.tensor(offset, dtype=u.dtype)
        for part_u, part_out, part_m in zip(flat_u.split(chunk), out.split(chunk), parts_m, strict=True):
            self._gather(table, part_u, inv_threshold, offset, scratch[: part_u.numel()], part_out)
            if part_m is not None:
                part_out.mul_(part_m)  # while the chunk is still in cache
        return out.view(u.shape)

    def _gather(self, table, u, inv_threshold, offset, scratch, out) -> None:
        """``out = table[index(u)]`` through ``scratch``: float index, then an integer in place."""
        res, n = self.entries_per_unit, table.numel()
        if self.folded:
            a = torch.mul(u, inv_threshold, out=scratch)
            a.sub_((self.low + self.high) / 2).abs_().neg_().add_((self.high - self.low) / 2)
            over = (a - self.tail_radius).clamp_(min=0)
            a.sub_(over.sub_(over.frac()))  # a -= floor(max(a - R, 0)): periodic fold into [R, R + 1)
            x = a.mul_(res).add_(self.tail_radius * res + 0.5)
        else:
            x = torch.add(offset, u, alpha=res * inv_threshold, out=scratch)  # one pass: offset + s * u
        if x.device.type != "cpu":
            torch.nan_to_num_(x, nan=0.0)  # a garbage index is a device-side assert there
        index = x.clamp_(0, n - 1).view(torch.int32 if x.dtype == torch.float32 else torch.int64)
        index.copy_(x)  # float -> integer in place (truncation = nearest entry: +0.5 above)
        try:
            torch.index_select(table, 0, index, out=out)
        except IndexError:  # NaN in u gave a garbage index: NaN gradient there, as other ops give
            nan = torch.isnan(u)
            index.masked_fill_(nan, 0)
            torch.index_select(table, 0, index, out=out).masked_fill_(nan, math.nan)


def _sum_of_shifted_kernels(n: int, steps: list[int], res: int, smoothness: float) -> tuple[np.ndarray, ...]:
    """``G`` and ``G'`` at ``n`` table entries with boundaries at entry positions ``steps``.

    Each boundary adds the same kernel ``(1/T) sigmoid'(x/T)`` sampled every ``1/res``, shifted by
    a whole number of entries: the kernel is computed once (float64) and shifted slices are added.
    NumPy, not torch: many small adds are faster without intra-op threads.
    """
    reach = max([n] + [abs(p) + n for p in steps])
    x = np.arange(-reach, reach + 1, dtype=np.float64) / (res * smoothness)
    e = np.exp(-np.abs(x))
    kernel = e / (1.0 + e) ** 2 / smoothness  # sigmoid'(x) = e^-|x| / (1 + e^-|x|)^2, no overflow
    sig = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    slope_kernel = kernel * (1.0 - 2.0 * sig) / smoothness  # sigmoid'' = sigmoid' (1 - 2 sigmoid)
    values = np.zeros(n)
    slopes = np.zeros(n)
    for p in steps:  # entry i is (i - p) entries from the boundary
        values += kernel[reach - p : reach - p + n]
        slopes += slope_kernel[reach - p : reach - p + n]
    return values, slopes


def _tail_radius(smoothness: float) -> int:
    per_unit_decay = 1.0 - math.exp(-1.0 / smoothness)
    return max(1, math.ceil(smoothness * math.log(1.0 / (TAIL_EPS * smoothness * per_unit_decay))))


@lru_cache(maxsize=64)
def sgs_table(low: int, high: int, smoothness: float) -> SgsTable:
    """Build (once per arguments) the lookup table of ``G`` for levels ``[low, high]``."""
    res = 2 * math.ceil(RES_PER_T / smoothness / 2)
    radius = _tail_radius(smoothness)
    span = high - low
    direct_entries = (span + 2 * radius) * res + 1
    folded = direct_entries > MAX_DIRECT_ENTRIES and span > 2 * radius + 2
    if folded:
        # a in [-R, R + 1] above the low end; boundaries at a = j + 0.5; farther ones add < eps
        n = (2 * radius + 1) * res + 1
        steps = [(j + radius) * res + res // 2 for j in range(min(span, 3 * radius + 3))]
    else:
        # t in [low - R, high + R]; boundary k + 0.5 sits at entry (k + 0.5 - low + R) * res
        n = direct_entries
        steps = [(k - low + radius) * res + res // 2 for k in range(low, high)]
    values, slopes = _sum_of_shifted_kernels(n, steps, res, smoothness)
    max_slope = 1.01 * float(np.abs(slopes).max())  # max on the grid; h << T keeps the true max within 1%
    t_max = max(abs(low), abs(high)) + radius if folded else 0.0
    max_error = (
        (0.5 + n * 2.0**-23) / res * max_slope
        + 6 * TAIL_EPS
        + 2.0**-22 * float(values.max())
        + 2.0**-23 * t_max * max_slope
    )
    return SgsTable(
        low=low,
        high=high,
        smoothness=smoothness,
        table=torch.from_numpy(values.astype(np.float32)),
        entries_per_unit=res,
        tail_radius=radius,
        folded=folded,
        max_error=max_error,
    )


class SgsQuantize(torch.autograd.Function):
    """``thr * clip(round(u / thr), low, high)`` forward, SGS backward.

    Saves only ``u`` (and a tensor threshold) for backward. With one torch thread and numba
    installed, the scalar-threshold forward runs as one fused pass (:mod:`snncompress.quant.fused`).
    ``threshold`` is a Python float (``scalar``, the fast path) or a tensor broadcastable to
    ``u``; for a tensor that requires grad, ``d out / d thr = Q(t) - t * G(t)`` with
    ``t = u / thr``, summed to the threshold's shape.
    """

    @staticmethod
    def forward(ctx, u, threshold, scalar, table):
        ctx.table, ctx.scalar = table, scalar
        if threshold is None:
            ctx.save_for_backward(u)
            if torch.get_num_threads() == 1:  # one fused pass, when numba is here
                out = fused.quantize_levels(u, scalar, table.low, table.high)
                if out is not None:
                    return out
            if scalar == 1.0:  # round(clip(u)) == clip(round(u)) for integer ends
                return torch.clamp(u, table.low, table.high).round_()
            return torch.div(u, scalar).round_().clamp_(table.low, table.high).mul_(scalar)
        ctx.save_for_backward(u, threshold)
        return torch.div(u, threshold).round_().clamp_(table.low, table.high).mul_(threshold)

    @staticmethod
    def backward(ctx, grad):
        table = ctx.table
        if ctx.scalar is not None:
            (u,) = ctx.saved_tensors
            return table.lookup(u, 1.0 / ctx.scalar, multiply_by=grad), None, None, None
        u, threshold = ctx.saved_tensors
        t = u / threshold
        surrogate = table.lookup(t)
        grad_u = grad_threshold = None
        if ctx.needs_input_grad[0]:
            grad_u = (surrogate * grad).sum_to_size(u.shape)
        if ctx.needs_input_grad[1]:
            levels = torch.round(t).clamp_(table.low, table.high)
            grad_threshold = ((levels - t * surrogate) * grad).sum_to_size(threshold.shape)
        return grad_u, grad_threshold, None, None
