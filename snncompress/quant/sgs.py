"""Stacked Gradient Surrogation for integer membrane levels (SpQuant §4.2.1, Eq. 11-13).

The quantizer ``Q(t) = clip(round(t), low, high)`` is a staircase with one unit step at each
level boundary ``b_k = k + 0.5``, ``k = low .. high-1``. SGS replaces each step by a sigmoid of
temperature ``T`` (the smoothness), so the backward pass uses

    G(t) = dQ*/dt = sum_k (1/T) * sigmoid'((t - b_k) / T),    sigmoid'(z) = sigmoid(z) * (1 - sigmoid(z))

(the SpQuant authors' code: one sigmoid derivative per step, their multiplier 2.0 being 1/T).

Evaluating the sum term by term costs one pass over the data per level; snnTorch's
``state_quant`` builds a ``[N, levels]`` tensor. Instead, G is tabulated once per
``(low, high, T)`` in float64 and looked up with the nearest table entry:

* direct table: ``t`` in ``[low - R, high + R]``, ``res`` entries per unit, ``R`` the tail radius
  past which every boundary is farther than ``R`` and ``G <= eps``; outside it the edge value is used.
* folded table (many levels): G is symmetric about the centre of the range and, farther than
  ``R`` from both ends, periodic with period 1 up to ``eps``; the table covers the first ``2R + 1``
  units from the low end and ``t`` is mapped there (``a = H - |t - centre|``, then
  ``a -= floor(max(a - R, 0))``). Its size no longer depends on the number of levels.

Both table sizes are independent of N and bounded (``2**17`` entries for the direct one), so the
backward pass allocates a fixed 12 bytes per element (index, gather, product), whatever the
number of levels. Error, worst case over ``t`` (see :attr:`SgsTable.max_error`):

    |G_table(t) - G(t)| <= (1/2 + n * 2**-23) * h * max|G'| + 6 * eps + 2**-22 * max G + 2**-23 * t_max * max|G'|

with ``h = 1/res`` (nearest entry, float32 index arithmetic), ``eps = 1e-8`` (every tail of the sum
past ``R`` obeys ``sigmoid'(z) <= e**-|z|``, a geometric series), float32 storage, and the float32
resolution of ``t`` itself on the folded path. At the default ``T = 0.5`` that is about 1.3e-4
against ``max G`` of about 0.79 (ternary) or 1.0 (wider).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

RES_PER_T = 1024  # table entries per unit of t/T: h = T / 1024 (rounded to an even count per unit)
TAIL_EPS = 1e-8
MAX_DIRECT_ENTRIES = 1 << 17


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


def _sum_of_shifted_kernels(n: int, steps: list[int], res: int, smoothness: float) -> tuple[torch.Tensor, ...]:
    """``G`` and ``G'`` at the ``n`` table entries, boundaries at entry positions ``steps``.

    Every boundary contributes the same kernel ``(1/T) sigmoid'(x/T)`` sampled every ``1/res``,
    shifted by a whole number of entries; the kernel is computed once in float64 and its shifted
    slices are added, exact up to float64 rounding.
    """
    reach = max([n] + [abs(p) + n for p in steps])
    x = torch.arange(-reach, reach + 1, dtype=torch.float64) / (res * smoothness)
    s = torch.sigmoid(x)
    kernel = s * (1 - s) / smoothness
    slope_kernel = kernel * (1 - 2 * s) / smoothness
    values = torch.zeros(n, dtype=torch.float64)
    slopes = torch.zeros(n, dtype=torch.float64)
    for p in steps:  # entry i sees the boundary at distance (i - p) entries
        values += kernel[reach - p : reach - p + n]
        slopes += slope_kernel[reach - p : reach - p + n]
    return values, slopes


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

    def lookup(self, u: torch.Tensor, inv_threshold: float = 1.0) -> torch.Tensor:
        """``G(u * inv_threshold)``, same dtype and shape as ``u``; NaN where ``u`` is NaN.

        Two fresh buffers of ``u``'s size (the float index, reused for the result, and the int32
        index); fresh memory costs page faults on CPU, so the arithmetic runs in place.
        """
        res, n = self.entries_per_unit, self.table.numel()
        if self.folded:
            x = torch.mul(u, inv_threshold) if inv_threshold != 1.0 else u.clone()
            x.sub_((self.low + self.high) / 2).abs_().neg_().add_((self.high - self.low) / 2)  # a = H - |t - c|
            over = (x - self.tail_radius).clamp_(min=0)
            x.sub_(over.sub_(over.frac()))  # a -= floor(max(a - R, 0)): periodic fold into [R, R + 1)
            x.mul_(res).add_(self.tail_radius * res + 0.5)
        else:
            x = torch.mul(u, res * inv_threshold).add_((self.tail_radius - self.low) * res + 0.5)
        if x.device.type != "cpu":
            torch.nan_to_num_(x, nan=0.0)  # an out-of-range index is a device assert there
        x.clamp_(0, n - 1)
        table = self.table.to(device=x.device, dtype=x.dtype)
        flat = x.reshape(-1)
        try:
            index = flat.to(torch.int32)
            return torch.index_select(table, 0, index, out=flat).view(u.shape)
        except IndexError:  # NaN in u gave a garbage index: NaN gradient there, as other ops give
            nan = torch.isnan(flat)
            index = flat.masked_fill(nan, 0).to(torch.int32)
            return torch.index_select(table, 0, index, out=flat).masked_fill_(nan, math.nan).view(u.shape)


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
        # a in [-R, R + 1] from the low end; boundaries at a = j + 0.5, farther ones add < eps
        n = (2 * radius + 1) * res + 1
        steps = [(j + radius) * res + res // 2 for j in range(min(span, 3 * radius + 3))]
    else:
        # t in [low - R, high + R]; boundary k + 0.5 sits at entry (k + 0.5 - low + R) * res
        n = direct_entries
        steps = [(k - low + radius) * res + res // 2 for k in range(low, high)]
    values, slope = _sum_of_shifted_kernels(n, steps, res, smoothness)
    max_slope = 1.01 * float(slope.abs().max())  # grid max; h << T so the true max is within 1%
    t_max = max(abs(low), abs(high)) + radius if folded else 0.0
    max_error = (
        (0.5 + n * 2.0**-23) / res * max_slope
        + 6 * TAIL_EPS
        + 2.0**-22 * float(values.max())
        + 2.0**-23 * t_max * max_slope
    )
    return SgsTable(
        low=low, high=high, smoothness=smoothness, table=values.to(torch.float32),
        entries_per_unit=res, tail_radius=radius, folded=folded, max_error=max_error,
    )


class SgsQuantize(torch.autograd.Function):
    """``thr * clip(round(u / thr), low, high)`` forward, SGS backward.

    Saves only ``u`` (and a tensor threshold) for backward. ``threshold`` is either a Python float
    (``scalar``) or a tensor broadcastable to ``u``; for a tensor that requires grad,
    ``d out / d thr = Q(t) - t * G(t)`` with ``t = u / thr``, summed to the threshold's shape.
    """

    @staticmethod
    def forward(ctx, u, threshold, scalar, table):
        ctx.table, ctx.scalar = table, scalar
        if threshold is None:
            if scalar == 1.0:
                q = torch.round(u).clamp_(table.low, table.high)
            else:
                q = torch.div(u, scalar).round_().clamp_(table.low, table.high).mul_(scalar)
            ctx.save_for_backward(u)
        else:
            q = torch.div(u, threshold).round_().clamp_(table.low, table.high).mul_(threshold)
            ctx.save_for_backward(u, threshold)
        return q

    @staticmethod
    def backward(ctx, grad):
        table = ctx.table
        if ctx.scalar is not None:
            (u,) = ctx.saved_tensors
            return table.lookup(u, 1.0 / ctx.scalar).mul_(grad), None, None, None
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
