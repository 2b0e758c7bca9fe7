"""Data-parallel fine-tuning under ``torchrun``: the process group, sharding, and rank-0-only output.

    torchrun --nproc_per_node 2 -m snncompress run MODEL --recipe R.yaml --data D -o OUT.safetensors

A launcher that sets the torch.distributed environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``; torchrun, ``python -m torch.distributed.run``, SLURM wrappers) starts one process per
replica. :func:`init_from_env` joins them into one process group (gloo on CPU, NCCL on CUDA). Then:

* Training (:func:`snncompress.sim.training.train`) wraps the model in DistributedDataParallel and
  gives each rank its part of every global batch (:class:`GlobalBatchShards`): N processes with
  ``--batch-size B`` take the steps one process takes with ``B x N``, on the same samples. Measured with
  torch 2.13 / gloo on a stepwise snnTorch model that is called once per time step before one backward:
  plain DDP gives gradients equal to the hand-made all-reduced mean (max difference 0.0 over three
  steps); ``static_graph=True`` is not needed. Buffer syncing in the forward is switched off: the
  snnTorch membrane is a registered buffer, and syncing it would copy rank 0's state into the other
  replicas at every step (the replicas' parameters stay equal without it: every rank applies the same
  averaged gradient). The runner resets each replica's neurons at the start of every batch.
* Validation during training runs each rank on its own share of the data and all-reduces the
  counts (:func:`all_reduce_sum`), so every rank sees the same accuracy and keeps the same epoch.
* PTQ calibration runs on rank 0 and its result is broadcast (:func:`run_on_main`), so every rank
  holds the same codes.
* Only rank 0 writes files and prints (:func:`is_main`, :func:`main_process_only`).

Everything here is a no-op in a plain single process: code calls these helpers unconditionally.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

T = TypeVar("T")

LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() else None


def launched() -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` > 1 and the rest set)."""
    if not all(os.environ.get(k) for k in LAUNCH_ENV):
        return False
    try:
        return int(os.environ["WORLD_SIZE"]) > 1
    except ValueError:
        return False


def env_rank() -> int:
    """This process's rank as the launcher set it (0 without a launcher); valid before the group exists."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_distributed() -> bool:
    """Whether this process is one of several in an initialized process group."""
    dist = _dist()
    return dist is not None and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return _dist().get_rank() if is_distributed() else 0


def world_size() -> int:
    return _dist().get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and prints."""
    return (rank() if is_distributed() else env_rank()) == 0


def backend_for(device: torch.device | str | None) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device is not None and torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: torch.device | str | None = None) -> bool:
    """Join the launcher's process group (once), gloo on CPU or NCCL on CUDA.

    On CUDA each rank takes the GPU ``LOCAL_RANK`` of its node (``torch.cuda.set_device``).

    Returns:
        True when this process is now one of several; False without a launcher.
    """
    if is_distributed():
        return True
    if not launched():
        return False
    dist = _dist()
    if dist is None:
        from snncompress.errors import InputError

        raise InputError("a distributed launch needs torch.distributed, which this torch build lacks")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def local_device(device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK`` under a launcher (one GPU per process); other devices unchanged."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def barrier() -> None:
    if is_distributed():
        _dist().barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """The element-wise sum of ``values`` over all ranks (float64; the values themselves without a group)."""
    if not is_distributed():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    _dist().all_reduce(tensor)
    return tensor.cpu().tolist()


def all_reduce_mean(values: list[float]) -> list[float]:
    """The element-wise mean of ``values`` over all ranks."""
    n = world_size()
    return [v / n for v in all_reduce_sum(values)]


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (pickled; for small results such as calibration codes)."""
    if not is_distributed():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank (the others wait).

    An exception on rank 0 is re-raised on every rank, so no rank waits forever for a result.
    """
    if not is_distributed():
        return fn()
    outcome: tuple[bool, Any] = (True, None)
    if rank() == 0:
        try:
            outcome = (True, fn())
        except Exception as exc:  # noqa: BLE001 - handed to every rank, raised again below
            outcome = (False, exc)
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def main_process_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorate ``fn`` so that it runs on rank 0 only (None elsewhere): printing, writing files."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs) if is_main() else None

    return wrapper


def sampler_for(dataset: Dataset, *, shuffle: bool, seed: int) -> DistributedSampler | None:
    """A DistributedSampler over ``dataset`` for this rank (None in a single process), for user loops.

    :func:`snncompress.sim.training.train` does not use it: its shuffle differs from one process's,
    so results would depend on the number of processes; it uses :class:`GlobalBatchShards` instead.

    Every rank gets the same number of batches (DistributedSampler pads the shards with repeated
    samples), which DDP needs: a rank with one batch more would wait forever for the others' gradients.
    """
    if not is_distributed():
        return None
    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=shuffle, seed=seed,
                              drop_last=False)


class GlobalBatchShards:
    """This rank's part of each global training batch: N processes take the steps one process would.

    One process shuffles with ``seed + epoch`` (:func:`one_process_order`) and cuts batches of
    ``batch_size``. Here the same order is cut into global batches of ``batch_size x world``, and each
    global batch into ``world`` contiguous parts, one per rank. Each part's mean loss is scaled by
    ``weights[step] = part x world / global batch`` before the backward, so DDP's average of the
    ranks' gradients is the gradient of the global batch's mean loss, also for a short last batch. A
    rank whose part of the last batch is empty runs one sample at weight 0 (DDP needs every rank in
    every backward). So ``--batch-size 64`` on 2 processes takes the steps of ``--batch-size 128`` on
    one, on the same samples, up to float rounding.

    Attributes:
        batches: this rank's sample indices, per step (a DataLoader ``batch_sampler``).
        weights: the loss scale per step (1.0 for full batches).
        counts: the samples of this rank's part per step (0 for a weight-0 stand-in).
    """

    def __init__(self, size: int, batch_size: int, seed: int, epoch: int, rank: int, world: int):
        order = one_process_order(size, seed + epoch)
        step = batch_size * world
        self.batches: list[list[int]] = []
        self.weights: list[float] = []
        self.counts: list[int] = []
        for start in range(0, size, step):
            chunk = order[start:start + step]
            base, extra = divmod(len(chunk), world)
            sizes = [base + (1 if r < extra else 0) for r in range(world)]
            low = sum(sizes[:rank])
            part = chunk[low:low + sizes[rank]]
            self.counts.append(len(part))
            self.weights.append(len(part) * world / len(chunk))
            self.batches.append(part or chunk[:1])

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def one_process_order(size: int, seed: int) -> list[int]:
    """The sample order of ``DataLoader(shuffle=True, generator=Generator().manual_seed(seed))`` over
    ``size`` samples, read from such a loader (its iterator draws from the generator before the sampler
    does, so a bare ``randperm`` would not reproduce it)."""
    if size == 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    return next(iter(DataLoader(range(size), batch_size=size, shuffle=True, generator=gen))).tolist()


def global_batch_shards(size: int, batch_size: int, seed: int, epoch: int) -> GlobalBatchShards | None:
    """This rank's :class:`GlobalBatchShards` for one epoch (None in a single process)."""
    if not is_distributed():
        return None
    return GlobalBatchShards(size, batch_size, seed, epoch, rank(), world_size())


def shard(dataset: Dataset) -> Dataset:
    """This rank's share of ``dataset`` for evaluation: every ``world_size``-th sample, none repeated, so
    the all-reduced counts are those of the whole set (the dataset itself in a single process)."""
    if not is_distributed():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))


def wrap_for_training(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when distributed (the model itself otherwise).

    See the module docstring for why plain DDP without buffer syncing is right for stateful neurons.
    """
    if not is_distributed() or not any(p.requires_grad for p in model.parameters()):
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"device_ids": [device]} if device.type == "cuda" else {}
    try:  # torch >= 2.13 names it forward_sync_buffers and deprecates broadcast_buffers
        return DistributedDataParallel(model, forward_sync_buffers=False, **kwargs)
    except TypeError:
        return DistributedDataParallel(model, broadcast_buffers=False, **kwargs)


def _collective_device() -> torch.device:
    """NCCL moves tensors between GPUs only; gloo works on CPU tensors."""
    dist = _dist()
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def destroy(wait_for_peers: bool = True) -> None:
    """Leave the process group (at the end of a command, so the launcher sees a clean exit).

    Args:
        wait_for_peers: meet every rank in a barrier first (a clean end); False on an error path, where
            a peer may sit in another collective and a barrier could wait for it forever.
    """
    dist = _dist()
    if dist is not None and dist.is_initialized():
        # Whatever still holds the group (a DDP wrapper, a finished work handle) is collected here, while
        # the interpreter is whole. Left to interpreter shutdown, gloo aborted the process after a run had
        # succeeded ("terminate called without an active exception"): 2 of 18 runs of
        # tests/sim/ddp_worker.py on a 2-core machine; 0 of 30 with the barrier and collections here.
        if wait_for_peers:
            try:
                dist.barrier()
            except RuntimeError:  # a peer left on an error (it said so); leaving is all that is left
                pass
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
