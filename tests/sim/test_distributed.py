"""Distributed fine-tuning under torchrun (gloo, CPU) and the single-process behaviour of the helpers.

The two torchrun tests start two processes each (``python -m torch.distributed.run --standalone``), a
few tens of seconds on a loaded 2-core machine; everything is tiny (10-16 samples, T = 3, 1-2 epochs).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler, TensorDataset

from snncompress.data.loading import DataBundle, DataOptions
from snncompress.sim import distributed
from snncompress.sim.device import resolve_device

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")

HERE = Path(__file__).resolve().parent
MODEL, DATA = "tests.models:leaky_mlp", "tests.models:static_dataset"
QAT = "version: 1\npasses:\n  - pass: quantize\n    mode: qat\n    epochs: 1\n    weight_quant: int4\n"
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _torchrun(args: list, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**env, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*LAUNCH, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_torchrun_qat_writes_one_file_that_loads_and_matches_one_process(tmp_path, tests_importable):
    (tmp_path / "qat.yaml").write_text(QAT)
    args = ["-m", "snncompress", "run", MODEL, "--recipe", "qat.yaml", "--data", DATA, "--train-data", DATA,
            "-T", "3", "-o", "out.safetensors", "--json", "run.json", "--device", "cpu"]
    proc = _torchrun(args, tmp_path, tests_importable)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.safetensors", "qat.yaml", "run.json"]
    # rank 1 stays quiet: one summary on stdout, one progress log on stderr
    assert proc.stdout.count("before -> after") == 1, proc.stdout
    assert proc.stderr.count("wrote out.safetensors") == 1, proc.stderr
    assert proc.stderr.count("[1/1] quantize") == 1, proc.stderr

    from snncompress.fileformat.loading import load_model
    from snncompress.pipeline.job import CompressJob, compress

    loaded = load_model(str(tmp_path / "out.safetensors"))
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["steps"][0]["metrics"]["best_epoch"] in (0, 1)
    # one process, same job: 10 samples in one batch of 10 vs two shards of 5 whose mean gradients are
    # averaged -- the same gradient up to float rounding, so the same result
    single = compress(CompressJob(model=MODEL, recipe=yaml.safe_load(QAT), data=DATA, train_data=DATA, time_steps=3,
                                  output=tmp_path / "one.safetensors", device="cpu"))
    assert report["after"]["accuracy"] == pytest.approx(single.report.after["accuracy"])
    ours, theirs = load_file(str(tmp_path / "out.safetensors")), load_file(str(tmp_path / "one.safetensors"))
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        a, b = ours[name].float(), theirs[name].float()
        assert (a != b).float().mean() <= 0.05, name  # a code may flip at a rounding boundary, no more
    assert sum(p.numel() for p in loaded.parameters()) > 0


def test_torchrun_ranks_agree_on_training_validation_and_calibration(tmp_path, tests_importable):
    """ddp_worker.py gives each rank different start weights / calibration data; every rank must end equal."""
    proc = _torchrun([HERE / "ddp_worker.py"], tmp_path, tests_importable)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the two ranks share the pipe, so their lines may interleave: count the marks, not the lines
    assert sorted(re.findall(r"rank (\d) ok", proc.stdout)) == ["0", "1"], proc.stdout


def test_helpers_are_no_ops_in_one_process(monkeypatch):
    for key in distributed.LAUNCH_ENV:
        monkeypatch.delenv(key, raising=False)
    assert not distributed.launched() and not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.init_from_env("cpu") is False
    assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2] and distributed.all_reduce_mean([3.0]) == [3.0]
    assert distributed.broadcast_object("x") == "x" and distributed.run_on_main(lambda: 7) == 7
    data = TensorDataset(torch.arange(5))
    assert distributed.sampler_for(data, shuffle=True, seed=0) is None and distributed.shard(data) is data
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_for_training(model) is model
    assert distributed.main_process_only(lambda: "printed")() == "printed"


def test_a_launch_needs_the_whole_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert not distributed.launched()  # a stray WORLD_SIZE does not make a process wait for peers
    assert distributed.env_rank() == 1 and not distributed.is_main()
    assert distributed.main_process_only(lambda: "printed")() is None


def test_loader_takes_a_sampler():
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10) % 2
    data = DataBundle("t", TensorDataset(x, y), False, 1, 2, DataOptions(batch_size=3))
    shards = [[int(v) for xb, _ in data.loader(sampler=DistributedSampler(data.dataset, 2, r, shuffle=False))
               for v in xb.flatten()] for r in (0, 1)]
    assert shards == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]
    assert [len(b[0]) for b in data.loader()] == [3, 3, 3, 1]


def test_nccl_for_cuda_gloo_otherwise():
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for(None) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("size", "batch", "world"), [(23, 4, 2), (10, 128, 2), (9, 2, 4), (3, 2, 4)])
def test_ranks_take_the_one_process_batches_between_them(size, batch, world):
    """Rank parts of global batch k, together, are batch k of one process with batch x world, and the
    loss weights make the mean of the ranks' weighted means the global batch's mean."""
    data = DataBundle("t", TensorDataset(torch.arange(size)), False, 1, 2, DataOptions(batch_size=batch * world))
    one = [b[0].tolist() for b in data.loader(shuffle=True, seed=5 + 2)]
    parts = [distributed.GlobalBatchShards(size, batch, seed=5, epoch=2, rank=r, world=world) for r in range(world)]
    assert len({len(p) for p in parts}) == 1  # every rank takes every step
    for step, expected in enumerate(one):
        taken = [i for p in parts if p.counts[step] for i in p.batches[step]]
        assert taken == expected
        per_sample = torch.rand(size, generator=torch.Generator().manual_seed(step))
        ddp = sum(p.weights[step] * per_sample[p.batches[step]].mean() for p in parts) / world
        assert float(ddp) == pytest.approx(float(per_sample[expected].mean()))
        assert all(len(p.batches[step]) >= 1 for p in parts)
