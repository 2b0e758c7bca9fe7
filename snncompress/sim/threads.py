"""How many CPU threads torch should use, chosen from the work.

Spiking networks for edge hardware are small: a demo-sized step is a few million multiply-adds per
batch, far below what torch's intra-op thread pool needs to pay for its synchronisation. Measured on
the 2-core machine (the issue "Passes that compose"): ``snncompress demo`` took 22 s with torch's
default 2 threads and 20 s with one on an idle machine, and 65 s against 25 s while another
CPU-bound process held a core -- spinning threads collapse when a core is shared, as on any laptop or
CI runner. So the default is one thread unless one batch step is large enough for threads to pay
(:data:`PARALLEL_FLOPS`); ``--threads N`` (or ``SNNCOMPRESS_THREADS``) overrides the choice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

#: Floating-point operations of one batch step above which the intra-op pool is used. A 3x3 conv
#: layer of 64 channels on 32x32 frames, batch 128, is ~10 GFLOP a step; the demo is ~10 MFLOP.
PARALLEL_FLOPS = 2e9
ENV = "SNNCOMPRESS_THREADS"


def step_flops(model: nn.Module, sample: torch.Tensor, *, is_sequence: bool, batch_size: int) -> float:
    """Floating-point operations of one time step on a batch of ``batch_size``, from one sample."""
    from torch.utils.flop_counter import FlopCounterMode

    from snncompress.sim.runner import SNNRunner

    runner = SNNRunner(model)
    x = sample.unsqueeze(0)
    if is_sequence:
        x = x[:, :1]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        runner.run(x, is_sequence=is_sequence, time_steps=1)
    return float(counter.get_total_flops()) * batch_size


def requested_threads() -> int | None:
    """The thread count asked for by ``SNNCOMPRESS_THREADS`` (None: choose from the work)."""
    raw = os.environ.get(ENV, "").strip().lower()
    if raw in ("", "auto", "0"):
        return None
    try:
        value = int(raw)
    except ValueError:
        from snncompress.errors import InputError

        raise InputError(f"{ENV}={raw!r}: expected a number of threads or 'auto'") from None
    return max(1, value)


def choose_threads(model: nn.Module, data, requested: int | None = None) -> int:
    """Threads for running ``model`` on ``data`` (a DataBundle): ``requested``, else from the work.

    Never more than the cores this process may use (under torchrun: its share of the node's cores).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = max(1, cores // _local_processes())  # torchrun's processes on this node share its cores
    if requested is None:
        requested = requested_threads()
    if requested is not None:
        return max(1, min(requested, cores))
    if data is None:
        return 1
    try:
        flops = step_flops(model, data.sample_input(), is_sequence=data.is_sequence,
                           batch_size=data.options.batch_size)
    except Exception:  # noqa: BLE001 - a model that does not run here fails later with a proper message
        return 1
    return cores if flops >= PARALLEL_FLOPS else 1


def _local_processes() -> int:
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


@contextmanager
def torch_threads(count: int) -> Iterator[int]:
    """Run a block with ``count`` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)
