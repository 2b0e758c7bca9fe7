"""How fine-tuning scales: a VGG-style CSNN 50-100x the demo's size, and torchrun with two CPU processes.

Not part of the test suite. ``python benchmarks/scale.py`` prints the tables and writes
``benchmarks/results/scale.json``; ``--quick`` times fewer batches (its figures are not the benchmark's).

1. **QAT epoch vs plain fp32 training epoch** (target: <= 1.3x). A VGG-style CSNN on synthetic
   2x32x32 event frames (T = 8, 10 classes, batch 8): conv(2->c) - LIF - conv(c->2c) - LIF - pool -
   conv(2c->2c) - LIF - pool - conv(2c->4c) - LIF - pool - FC(64c->10) - LIF. Each row times training
   batches side by side in the same run, in turn: this tool's QAT loop (``snncompress.sim.training.train``
   with the quantize pass's constraints: PoT 4-bit fake-quantized weights, ternary stored membrane,
   learned thresholds, cosine Adam) and a plain snnTorch fp32 loop on the same model and batches (reset,
   T calls, CE on spike counts, Adam). The tool's per-batch times are read between consecutive
   optimizer steps (``after_step``), so its validation passes are not counted; the first batch of each
   is a warm-up; the tool runs before and after the plain loop (3 + 3 timed batches against 3). Ratio: median
   tool batch / median plain batch. Three sizes (c = 20, 40, 80 at T = 8: 4.6x, 17x and 63x the demo's
   parameters) show the growth with model size; the middle size at T = 2, 4, 8 shows the growth with T.
2. **torchrun, 2 CPU processes (gloo), on the demo**: ``snncompress quantize demo --mode qat --epochs 1
   --data digits`` in one process (batch 128) and under ``python -m torch.distributed.run
   --nproc_per_node 2`` (batch 64 per process: the same 128 samples per optimizer step). Reported: the
   test accuracy of each result file, the difference in samples (target: within one), and the QAT pass's
   wall time (from the run JSON). On a 2-core machine two processes compete with everything else for
   the same two cores: the wall time says what the launch costs here, not what it gains on many cores.

The machine is a shared 2-core box: the load average is printed and stored; figures taken under load
are noisy (ratios less so: both sides are timed in turn, in the same run).

Usage: ``python benchmarks/scale.py [--quick] [--skip-torchrun] [--out benchmarks/results/scale.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = HERE / "results" / "scale.json"
RATIO_TARGET = 1.3
CLASSES, BATCH, FRAME = 10, 8, 32
DEMO_PARAMS = 13_706  # digits_csnn(), counted in main()


def vgg_csnn(c: int) -> nn.Sequential:
    import snntorch as snn

    def lif(output: bool = False):
        return snn.Leaky(beta=0.5, init_hidden=True, output=output)

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, c, 3, padding=1), lif(),
        nn.Conv2d(c, 2 * c, 3, padding=1), lif(), nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1), lif(), nn.MaxPool2d(2),
        nn.Conv2d(2 * c, 4 * c, 3, padding=1), lif(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * c * 16, CLASSES), lif(output=True),
    )


def event_frames(n: int, steps: int, seed: int = 0):
    """Synthetic DVS-like frames: sparse binary events (2 polarities), class-dependent rates."""
    from snncompress.data.loading import DataBundle, DataOptions

    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    rate = 0.05 + 0.1 * (y.float() / CLASSES).view(n, 1, 1, 1, 1)
    x = (torch.rand(n, steps, 2, FRAME, FRAME, generator=gen) < rate).float()
    return DataBundle("events", TensorDataset(x, y), True, steps,
                      CLASSES, DataOptions(time_steps=steps, batch_size=BATCH, seed=seed))


def tool_qat_batches(c: int, data, val) -> list[float]:
    """Per-batch seconds of this tool's QAT loop (the quantize pass's constraints through train())."""
    from snncompress.passes.kit import select_layers
    from snncompress.passes.quantize import QuantizeConfig, _install_membrane, _scheme
    from snncompress.sim.constraints import FakeQuantWeights, LearnableThresholds
    from snncompress.sim.training import TrainConfig, train

    model = vgg_csnn(c)
    config = QuantizeConfig(mode="qat", weight_quant="pot4", membrane_quant="ternary", epochs=1)
    layers = select_layers(model, config, ("synaptic", "neuron"))
    neurons = [(s.name, s.module) for s in layers if s.kind == "neuron"]
    _install_membrane(model, neurons, config, None)
    schemes = {f"{s.name}.weight": _scheme(model, config, s.name) for s in layers if s.kind == "synaptic"}
    fake = FakeQuantWeights(schemes, encode=False)
    thresholds = LearnableThresholds([n for n, _ in neurons], lr_scale=config.threshold_lr_scale)
    stamps: list[float] = []
    train(model, data, val, TrainConfig(epochs=1, lr=1e-3, schedule="cosine"), constraints=[fake, thresholds],
          after_step=lambda _m: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]  # the first batch is the warm-up


def plain_fp32_batches(c: int, data) -> list[float]:
    """Per-batch seconds of the same model trained the plain snnTorch way (fp32, no tool)."""
    import snntorch as snn

    model = vgg_csnn(c)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    neurons = [m for m in model.modules() if isinstance(m, snn.SpikingNeuron)]
    times, last = [], None
    for x, y in data.loader(shuffle=True, seed=1):
        for m in neurons:
            m.reset_mem()
        spikes = torch.stack([model(x[:, t])[0] for t in range(x.shape[1])])
        loss = nn.functional.cross_entropy(spikes.sum(0), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        now = time.perf_counter()
        if last is not None:
            times.append(now - last)
        last = now
    return times


def epoch_rows(quick: bool, log) -> list[dict]:
    from snncompress.data.loading import DataBundle

    batches = 2 if quick else 3  # timed batches per run (one more as warm-up)
    cases = [(20, 8), (40, 8), (80, 8), (40, 2), (40, 4)]
    rows = []
    for c, steps in cases:
        data = event_frames(BATCH * (batches + 1), steps)
        # validation on one small batch: train() needs it, its time is not in the per-batch figures
        val = DataBundle("val", TensorDataset(*data.dataset[:BATCH]), True, steps, CLASSES, data.options)
        params = sum(p.numel() for p in vgg_csnn(c).parameters())
        start = time.perf_counter()
        tool = tool_qat_batches(c, data, val)
        plain = plain_fp32_batches(c, data)
        tool2 = tool_qat_batches(c, data, val)  # tool, plain, tool: a load change shows as a spread
        tool_all = tool + tool2
        ratio = statistics.median(tool_all) / statistics.median(plain)
        rows.append({"channels": c, "params": params, "x_demo": params / DEMO_PARAMS, "time_steps": steps,
                     "batch": BATCH, "tool_ms": [1e3 * t for t in tool_all], "plain_ms": [1e3 * t for t in plain],
                     "tool_median_ms": 1e3 * statistics.median(tool_all),
                     "plain_median_ms": 1e3 * statistics.median(plain), "ratio": ratio,
                     "load_avg": os.getloadavg()[0]})
        log(f"c={c} T={steps}: {params:,} params ({params / DEMO_PARAMS:.0f}x demo), tool "
            f"{rows[-1]['tool_median_ms']:.0f} ms/batch vs plain {rows[-1]['plain_median_ms']:.0f} ms/batch = "
            f"{ratio:.2f}x ({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f})")
    return rows


def torchrun_rows(log, seeds: list[int]) -> dict:
    """The demo's 1-epoch QAT in one process and under torchrun, for each seed (the seed moves the
    shuffling, and the two launches shuffle differently, so the seeds show the spread to compare with)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out: dict = {}
    runs = {"1 process": ([sys.executable], "128"),
            "torchrun 2 processes": ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                      "--nproc_per_node", "2"], "64")}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for name, (launcher, batch) in runs.items():
                base = ["-m", "snncompress", "quantize", "demo", "--mode", "qat", "--epochs", "1", "--data",
                        "digits", "--device", "cpu", "-q", "--seed", str(seed), "--batch-size", batch]
                target, report = Path(tmp) / f"{seed}-{batch}.safetensors", Path(tmp) / f"{seed}-{batch}.json"
                start = time.perf_counter()
                proc = subprocess.run([*launcher, *base, "-o", str(target), "--json", str(report)],
                                      env=env, capture_output=True, text=True, timeout=1800)
                wall = time.perf_counter() - start
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
                payload = json.loads(report.read_text())
                row = {"seed": seed, "accuracy": payload["after"]["accuracy"], "qat_seconds": payload["seconds"][0],
                       "best_epoch": payload["steps"][0]["metrics"].get("best_epoch"),
                       "command_wall_s": wall, "batch_per_process": int(batch), "load_avg": os.getloadavg()[0]}
                out.setdefault(name, []).append(row)
                log(f"{name}, seed {seed}: accuracy {row['accuracy']:.2f}% (best epoch {row['best_epoch']}), "
                    f"QAT pass {row['qat_seconds']:.1f} s, command {wall:.1f} s (load {row['load_avg']:.1f})")
    samples = 540
    out["difference_samples"] = [round(abs(a["accuracy"] - b["accuracy"]) * samples / 100, 2)
                                 for a, b in zip(out["1 process"], out["torchrun 2 processes"], strict=True)]
    out["mean_accuracy"] = {name: statistics.mean(r["accuracy"] for r in out[name]) for name in runs}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-torchrun", action="store_true")
    parser.add_argument("--skip-epoch", action="store_true",
                        help="Only the torchrun rows (the epoch rows of an existing --out file are kept).")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds of the torchrun comparison (default 3).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from snncompress.demo.zoo import digits_csnn

    assert sum(p.numel() for p in digits_csnn().parameters()) == DEMO_PARAMS
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__, "threads": 1,
            "load_avg_start": os.getloadavg(), "quick": args.quick}
    if args.skip_epoch and args.out.exists():
        result = json.loads(args.out.read_text())
        result["meta"]["torchrun_meta"] = meta
    else:
        result = {"meta": meta, "epoch": epoch_rows(args.quick, log)}
    if not args.skip_torchrun:
        result["torchrun"] = torchrun_rows(log, list(range(1 if args.quick else args.seeds)))
    meta["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average at start {meta['load_avg_start'][0]:.1f}, at end {meta['load_avg_end'][0]:.1f} "
          f"({meta['cpus']} CPUs; figures taken under that load)")
    loads = ", ".join(f"{r['load_avg']:.1f}" for r in result["epoch"])
    print(f"epoch rows: load average {loads}")
    print("| channels c | params (x demo) | T | tool QAT ms/batch | plain fp32 ms/batch | ratio (target <= 1.3) |")
    print("|---|---|---|---|---|---|")
    for r in result["epoch"]:
        mark = "pass" if r["ratio"] <= RATIO_TARGET else "FAIL"
        print(f"| {r['channels']} | {r['params']:,} ({r['x_demo']:.0f}x) | {r['time_steps']} | "
              f"{r['tool_median_ms']:.0f} | {r['plain_median_ms']:.0f} | {r['ratio']:.2f}x {mark} |")
    if "torchrun" in result:
        t = result["torchrun"]
        print("\n| demo QAT, 1 epoch | seed | test accuracy | best epoch | QAT pass wall s | command wall s | load |")
        print("|---|---|---|---|---|---|---|")
        for name in ("1 process", "torchrun 2 processes"):
            for r in t[name]:
                print(f"| {name} (batch {r['batch_per_process']}/process) | {r['seed']} | {r['accuracy']:.2f}% | "
                      f"{r['best_epoch']} | {r['qat_seconds']:.1f} | {r['command_wall_s']:.1f} | {r['load_avg']:.1f} |")
        print(f"\naccuracy difference per seed: {t['difference_samples']} of 540 samples (target: <= 1); "
              f"mean accuracy {t['mean_accuracy']['1 process']:.2f}% (1 process) vs "
              f"{t['mean_accuracy']['torchrun 2 processes']:.2f}% (torchrun)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
