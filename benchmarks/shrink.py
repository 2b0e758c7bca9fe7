"""Structured pruning, masked against shrunk (issue 11): the same accuracy, a smaller dense model.

Not part of the test suite. ``python benchmarks/shrink.py`` prints one table and writes
``benchmarks/results/shrink.json``; ``--quick`` is one seed (its figures are not the benchmark's).

Models, data and fine-tuning as ``benchmarks/prune.py`` (digits, T = 8, direct encoding; accuracy on
digits:test, 540 samples; fine-tuning on digits:train): the built-in ``demo`` (conv 16 - conv 32 - fc 64 -
fc 10) and the ``mlp`` (fc 256 - fc 128 - fc 10, trained here first, 8 epochs, seed 0).

Rows, each the mean over seeds 0-2 (each seed's figure in the JSON): structured pruning of 50 % of the output
channels / neurons of every synaptic layer but the last (its outputs are the classes), one-shot, then 3
fine-tuning epochs (lr 3e-3), run twice from the same seed:

* ``masked``: the pruned rows stay in the model, zero, under a mask (bitmap / CSR index where it pays);
* ``shrunk``: the same run with ``shrink: true``: the pruned outputs, the next layer's inputs of them
  (through the flatten: each removed channel's 2x2 block of features) are removed; no mask is left.

Per row: accuracy (the two must be equal: shrinking is exact), parameters (``nn.Parameter`` entries),
per-sample memory of the hardware report (weights, index, scales, membrane, spikes), synaptic ops measured on
digits:test and the dense bound (every connection of every layer, Eq. 30's upper end, over T steps), energy;
the reductions against fp32 as the hardware report gives them.

Usage: ``python benchmarks/shrink.py [--quick] [--out benchmarks/results/shrink.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DEFAULT_OUT = HERE / "results" / "shrink.json"
SEEDS = (0, 1, 2)
EPOCHS = 3
LR = 3e-3
RATIO = 0.5


def run_one(base, test, train, seed: int, shrink: bool) -> dict:
    from prune import _run

    from snncompress.hardware.description import SynapticLayer
    from snncompress.models.layers import synaptic_layers
    from snncompress.state import get_state

    targets = [n for n, _ in synaptic_layers(base)[:-1]]
    step = {"pass": "prune", "weights_structured": RATIO, "targets": targets, "epochs": EPOCHS, "lr": LR,
            "shrink": shrink}
    model, report = _run(base, [step], test, train, seed)
    m, hw = report.steps[0]["metrics"], report.hardware
    description = report.last_measurement.description
    dense = sum(layer.dense_ops_per_step for layer in description.layers if isinstance(layer, SynapticLayer))
    masks = sorted(get_state(model).masks)
    return {"seed": seed, "accuracy": m["accuracy_after"], "parameters": report.after["parameters"],
            "memory_kib": hw["memory_bits"] / 8 / 1024, "memory_reduction": hw["memory_reduction"],
            "synaptic_ops": hw["synaptic_ops"], "dense_ops": dense * description.time_steps,
            "energy_nj": hw["energy_pj"] / 1000, "energy_reduction": hw["energy_reduction"],
            "masks": masks, "shrink": m.get("shrink")}


def _mean(runs, key):
    return statistics.mean(r[key] for r in runs)


def rows_for(name, base, test, train, seeds, log) -> tuple[list[dict], dict]:
    from snncompress.sim.evaluate import evaluate

    out = {"fp32_accuracy": evaluate(base, test).accuracy}
    for shrink in (False, True):
        runs = []
        for seed in seeds:
            runs.append(run_one(base, test, train, seed, shrink))
            log(f"{name} structured {RATIO:.0%} {'shrunk' if shrink else 'masked'} seed {seed}: "
                f"{runs[-1]['accuracy']:.2f}%, {runs[-1]['parameters']:,} parameters, "
                f"{runs[-1]['memory_kib']:.2f} KiB")
        out["shrunk" if shrink else "masked"] = runs
    same = all(a["accuracy"] == b["accuracy"] for a, b in zip(out["masked"], out["shrunk"], strict=True))
    rows = []
    for key in ("masked", "shrunk"):
        runs = out[key]
        rows.append({"model": name, "row": f"structured {RATIO:.0%} hidden, {key}",
                     "accuracy": _mean(runs, "accuracy"), "parameters": _mean(runs, "parameters"),
                     "memory_kib": _mean(runs, "memory_kib"), "memory_reduction": _mean(runs, "memory_reduction"),
                     "synaptic_ops": _mean(runs, "synaptic_ops"), "dense_ops": _mean(runs, "dense_ops"),
                     "energy_nj": _mean(runs, "energy_nj"), "energy_reduction": _mean(runs, "energy_reduction"),
                     "masks": len(runs[0]["masks"])})
    out["same_accuracy"] = same
    return rows, out


def print_table(rows, meta) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"snncompress shrink benchmark{' (--quick: not the benchmark figures)' if meta['quick'] else ''}"
    caption = (f"load average {meta['load_start'][0]:.2f} at start, {meta['load_end'][0]:.2f} at end on "
               f"{meta['cpus']} CPUs; total {meta['seconds']:.0f} s; seeds {meta['seeds']}")
    table = Table(title=title, caption=caption)
    for column in ("model", "row", "accuracy", "parameters", "memory KiB (vs fp32)", "synaptic ops measured / dense",
                   "energy nJ (vs fp32)", "masks"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(r["model"], r["row"], f"{r['accuracy']:.2f}%", f"{r['parameters']:,.0f}",
                      f"{r['memory_kib']:.2f} ({r['memory_reduction']:.2f}x)",
                      f"{r['synaptic_ops']:,.0f} / {r['dense_ops']:,.0f}",
                      f"{r['energy_nj']:,.1f} ({r['energy_reduction']:.2f}x)", str(r["masks"]))
    Console(width=max(Console().width, 160)).print(table)


def main(argv: list[str] | None = None) -> int:
    from prune import _data, _models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started, load_start = time.perf_counter(), os.getloadavg()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {line}", file=sys.stderr, flush=True)

    seeds = SEEDS[:1] if args.quick else SEEDS
    test, train = _data()
    rows, results = [], {}
    for name, base in _models(test, train, log).items():
        more, results[name] = rows_for(name, base, test, train, seeds, log)
        rows += more
    meta = {"quick": args.quick, "seeds": list(seeds), "cpus": os.cpu_count(), "load_start": load_start,
            "load_end": os.getloadavg(), "seconds": time.perf_counter() - started, "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print_table(rows, meta)
    for name, result in results.items():
        print(f"{name}: fp32 {result['fp32_accuracy']:.2f}%; masked and shrunk accuracy equal on every seed: "
              f"{result['same_accuracy']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows, **results}, indent=2, default=float) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
