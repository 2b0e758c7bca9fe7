"""Speed and memory of membrane quantization, forward + backward, on one large float32 tensor.

Methods (same number of levels where the methods allow it):

* ours ternary: ``MembraneQuantizer.ternary()`` (3 levels, SGS backward).
* ours int4: ``MembraneQuantizer.from_bits(4)`` (16 levels, SGS backward).
* snnTorch ``state_quant(num_bits=2)`` (4 levels) and ``num_bits=4`` (16 levels), STE backward.
* bare ``round(clamp(u, -1, 1))`` with a straight-through gradient (``u + (q - u).detach()``),
  the floor any quantizer built from plain torch ops pays.

With numba installed (``pip install -e ".[fast]"``) and one torch thread, ours runs fused kernels
(:mod:`snncompress.quant.fused`: one pass forward, one backward) and can beat the bare STE.

Targets: ours ternary >= 10x faster than state_quant 2-bit, ours int4 >= 30x faster than
state_quant 4-bit, and both within 3x of the bare STE. The "bare STE" column is state_quant's time
over the bare STE's: the speedup of a quantizer made of plain torch round/clamp with no surrogate at
all (JSON key ``ceiling``), for judging a speedup against what the machine gives in that run.

Time: all methods run in turn within each round (so they see the same machine load); we report
the median time per method and, for the ratios, the median over rounds of the per-round ratio.

Memory: each method runs once more in a fresh Python process; we report how much that process's
peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` just before) grew during one
forward + backward, after the input and the upstream gradient were allocated and the method had
been warmed up on a tiny tensor. It counts
everything the call touched: the output, the input's gradient, saved tensors, temporaries and
allocator slack (page granularity); median of three processes, as the allocator's reuse of
freed pages varies from run to run. ``tracemalloc`` cannot see PyTorch's allocations, so it is
not used.

Usage: ``python benchmarks/membrane_speed.py [--n 1000000] [--repeats 15] [--threads 1]``
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

TARGETS = [  # (ours, reference, at least this many times faster)
    ("ours ternary", "snntorch state_quant 2-bit", 10.0),
    ("ours int4", "snntorch state_quant 4-bit", 30.0),
]
STE_LIMIT = 3.0  # ours may be at most this many times slower than the bare STE
BARE = "bare round/clamp STE"


def _methods() -> dict[str, tuple[int, Callable[[], Callable[[torch.Tensor], torch.Tensor]]]]:
    """name -> (levels, factory of the function to time)."""

    def ours(quantizer):
        return lambda: quantizer.quantize

    def state_quant(bits):
        def make():
            from snntorch.functional.quant import state_quant

            return state_quant(num_bits=bits, uniform=True, threshold=1.0)

        return make

    def bare(u: torch.Tensor) -> torch.Tensor:
        return u + (torch.round(torch.clamp(u, -1.0, 1.0)) - u).detach()

    from snncompress.quant.membrane import MembraneQuantizer

    return {
        "ours ternary": (3, ours(MembraneQuantizer.ternary())),
        "ours int4": (16, ours(MembraneQuantizer.from_bits(4))),
        "snntorch state_quant 2-bit": (4, state_quant(2)),
        "snntorch state_quant 4-bit": (16, state_quant(4)),
        BARE: (3, lambda: bare),
    }


def _inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    # filled in place: no freed temporaries whose pages a later allocation could reuse
    return torch.empty(n).normal_(0.0, 2.0, generator=gen), torch.empty(n).uniform_(generator=gen)


def _forward_backward(fn, u: torch.Tensor, upstream: torch.Tensor) -> float:
    x = u.detach().requires_grad_()
    start = time.perf_counter()
    fn(x).backward(upstream)
    return time.perf_counter() - start


def _peak_extra_bytes(name: str, n: int, threads: int | None, probes: int = 3) -> int:
    """Peak-RSS growth of one forward + backward of ``name``: median over fresh processes."""
    cmd = [sys.executable, __file__, "--_memory-probe", name, "--n", str(n)]
    if threads:
        cmd += ["--threads", str(threads)]
    results = []
    for _ in range(probes):
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(int(done.stdout.strip().splitlines()[-1]))
    return int(statistics.median(results))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_probe(name: str, n: int) -> None:
    fn = _methods()[name][1]()
    u, upstream = _inputs(n)
    small = torch.randn(1000)
    _forward_backward(fn, small, torch.ones_like(small))  # lazy imports, tables
    try:  # Linux >= 4.0: reset the peak RSS to the current RSS
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        before = _status_kib("VmRSS")
    except OSError:  # no reset: fall back to the lifetime peak (may hide growth below an earlier peak)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _forward_backward(fn, u, upstream)
    print((_status_kib("VmHWM") - before) * 1024)


def run(n: int = 1_000_000, repeats: int = 15, threads: int | None = None, memory: bool = True) -> list[dict]:
    """Time (and measure) every method; one dict per method.

    Keys: ``method``, ``levels``, ``median_ms``, ``min_ms``, ``peak_extra_bytes`` (None without
    ``memory``), ``threads``, ``n``; rows of ours add ``reference``, ``speedup``,
    ``target_speedup``, ``vs_bare_ste``, ``ste_limit`` and ``ceiling`` (the reference's time over
    the bare STE's: the bare STE's own speedup). Ratios are
    medians over rounds of the per-round ratio.
    """
    if threads:
        torch.set_num_threads(threads)
    methods = {name: (levels, make()) for name, (levels, make) in _methods().items()}
    u, upstream = _inputs(n)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_index in range(repeats + 2):  # two warm-up rounds
        for name, (_, fn) in methods.items():
            elapsed = _forward_backward(fn, u, upstream)
            if round_index >= 2:
                times[name].append(elapsed)

    def paired(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    rows = []
    for name, (levels, _) in methods.items():
        row = {
            "method": name,
            "levels": levels,
            "median_ms": 1e3 * statistics.median(times[name]),
            "min_ms": 1e3 * min(times[name]),
            "peak_extra_bytes": _peak_extra_bytes(name, n, threads) if memory else None,
            "threads": torch.get_num_threads(),
            "n": n,
        }
        for ours, reference, target in TARGETS:
            if name == ours:
                row |= {
                    "reference": reference,
                    "speedup": paired(reference, ours),
                    "target_speedup": target,
                    "vs_bare_ste": paired(ours, BARE),
                    "ceiling": paired(reference, BARE),  # the bare STE's own speedup
                    "ste_limit": STE_LIMIT,
                }
        rows.append(row)
    return rows


def _print(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Membrane quantization, forward + backward, n = {rows[0]['n']:,} float32, "
        f"{rows[0]['threads']} thread(s)"
    )
    for column in (
        "method",
        "levels",
        "median ms",
        "min ms",
        "peak extra MiB",
        "speedup (target)",
        "bare STE speedup",
        "x bare STE",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        mem = "-" if row["peak_extra_bytes"] is None else f"{row['peak_extra_bytes'] / 2**20:.1f}"
        speed = ste = ceiling = ""
        if "speedup" in row:
            ok = row["speedup"] >= row["target_speedup"]
            speed = f"[{'green' if ok else 'red'}]{row['speedup']:.1f}x (>= {row['target_speedup']:.0f}x)"
            ok = row["vs_bare_ste"] <= row["ste_limit"]
            ste = f"[{'green' if ok else 'red'}]{row['vs_bare_ste']:.2f}x (<= {row['ste_limit']:.0f}x)"
            ceiling = f"{row['ceiling']:.1f}x"
        table.add_row(
            row["method"],
            str(row["levels"]),
            f"{row['median_ms']:.2f}",
            f"{row['min_ms']:.2f}",
            mem,
            speed,
            ceiling,
            ste,
        )
    Console(width=max(Console().width, 130)).print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory processes")
    parser.add_argument("--_memory-probe", dest="probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        _memory_probe(args.probe, args.n)
        return
    _print(run(n=args.n, repeats=args.repeats, threads=args.threads, memory=not args.no_memory))


if __name__ == "__main__":
    main()
