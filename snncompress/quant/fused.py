"""Optional fused CPU kernels for the membrane quantizer (``pip install "snncompress[fast]"``: numba).

Forward, ``thr * clip(round(u / thr), low, high)`` with a scalar threshold: torch makes two passes
(four when ``thr != 1``); the kernel makes one with the same float32 operations in the same order
(round half to even), so its output is bitwise torch's (tested).

Backward: the torch path of :meth:`snncompress.quant.sgs.SgsTable.lookup` makes five passes over each
chunk (index arithmetic, clamp, float-to-integer, gather, multiply by the upstream gradient). With
numba installed, the direct-table lookup with a scalar threshold runs as one compiled loop, in one
pass and with no scratch memory. It reads the same table; its index arithmetic is float64 (the torch
path's is float32, one fused multiply-add), so the two pick a different, neighbouring entry only
where the float32 index rounds across an entry edge -- both within the table's error bound (tested).
Both are serial: :mod:`snncompress.quant.sgs` uses them only when torch runs one intra-op thread
(with more, torch's parallel ops are as fast or faster).

Nothing changes without numba, or where numba cannot compile (an unsupported numpy): the torch
path runs. ``SNNCOMPRESS_NO_FUSED=1`` turns the kernels off.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import torch


@cache
def _kernel():
    """The compiled kernels ``(gather_times, levels)``, or None (no numba, turned off, or they failed to
    compile)."""
    if os.environ.get("SNNCOMPRESS_NO_FUSED", "").strip() not in ("", "0"):
        return None
    try:
        import numba
    except Exception:  # not installed, or broken against this numpy
        return None

    @numba.njit(nogil=True, cache=False)
    def gather_times(u, grad, out, table, scale, offset):  # pragma: no cover - compiled
        last = float(table.size - 1)
        for i in range(u.size):
            x = u[i] * scale + offset  # float64
            if x != x:  # NaN in u: NaN gradient, as the torch path gives
                out[i] = np.nan
                continue
            x = min(max(x, 0.0), last)
            out[i] = table[np.int64(x)] * grad[i]

    @numba.njit(nogil=True, cache=False)
    def levels(u, out, scale, low, high):  # pragma: no cover - compiled
        for i in range(u.size):
            x = np.rint(u[i] / scale)  # float32 throughout, as torch.div / round_ / clamp_ / mul_
            if x != x:
                out[i] = np.nan
                continue
            out[i] = min(max(x, low), high) * scale

    try:
        probe = np.zeros(1, np.float32)
        gather_times(probe, probe, probe.copy(), np.zeros(2, np.float32), 1.0, 0.5)
        levels(probe, probe.copy(), np.float32(1.0), np.float32(-1.0), np.float32(1.0))
    except Exception:
        return None
    return gather_times, levels


def available() -> bool:
    """Whether the fused kernels can run here."""
    return _kernel() is not None


def gather_times_grad(u: torch.Tensor, grad: torch.Tensor, table: torch.Tensor, scale: float,
                      offset: float) -> torch.Tensor | None:
    """``table[clamp(u * scale + offset, 0, n - 1)] * grad`` (truncated index), or None when not applicable.

    Applies to contiguous float32 CPU tensors of one shape (``grad`` is made contiguous) and a float32
    table; the index arithmetic is float64, the product with ``grad`` float32.
    """
    kernels = _kernel()
    if (kernels is None or not _plain_cpu_float32(u) or grad.dtype != torch.float32
            or table.dtype != torch.float32 or grad.shape != u.shape):
        return None
    out = torch.empty_like(u, memory_format=torch.contiguous_format)
    kernels[0](u.detach().numpy().reshape(-1), grad.detach().contiguous().numpy().reshape(-1),
               out.numpy().reshape(-1), table.numpy(), float(scale), float(offset))
    return out


def quantize_levels(u: torch.Tensor, scale: float, low: int, high: int) -> torch.Tensor | None:
    """``scale * clip(round(u / scale), low, high)`` in float32, bitwise as torch computes it; None when
    not applicable (no numba, not a contiguous float32 CPU tensor)."""
    kernels = _kernel()
    if kernels is None or not _plain_cpu_float32(u):
        return None
    out = torch.empty_like(u, memory_format=torch.contiguous_format)
    kernels[1](u.detach().numpy().reshape(-1), out.numpy().reshape(-1), np.float32(scale), np.float32(low),
               np.float32(high))
    return out


def _plain_cpu_float32(u: torch.Tensor) -> bool:
    return u.device.type == "cpu" and u.dtype == torch.float32 and u.is_contiguous()
