"""Accuracy, memory, energy and synaptic ops of the prune pass on two models (issue 11).

Not part of the test suite. ``python benchmarks/prune.py`` prints one table (measured value, target,
pass / fail / reported per row) and writes ``benchmarks/results/prune.json``; ``--quick`` is a short
run (one seed: its figures are not the benchmark's).

Models (digits, T = 8, direct encoding, batch 128; accuracy on digits:test, 540 samples; every
fine-tuning on digits:train, its epoch chosen on digits:train, never on the test split):

* ``demo``: the built-in model, conv(1->16) - pool - conv(16->32) - pool - fc(128->64) - fc(64->10);
* ``mlp``: a fully connected model of a different shape, fc(64->256) - fc(256->128) - fc(128->10), trained
  here first (fp32, 8 epochs, seed 0, the same for every seed of the rows).

Rows, each the mean over seeds 0-2 (each seed's figure in the JSON):

* unstructured weight sparsity 50 / 80 / 90 % on the hidden layers (the first and last layer kept dense, as
  is usual; the whole-model weight sparsity is printed), one-shot then 3 fine-tuning epochs (lr 3e-3):
  accuracy, memory and energy reductions against fp32 including the sparse format's index
  (the hardware report: dense / bitmap / CSR per layer, irregular-access factor);
* spatial pruning 0.35 (membrane importance, every hidden neuron layer) + 3 fine-tuning epochs: measured
  synaptic operations per sample before / after on digits:test, and the drop, against the issue's target
  for spatial + channel masking (>= 2x with <= 2 points);
* spatial 0.35 + channel masking (SpQuant Eq. 23; TH 0.47, a gate on every hidden neuron layer) + 8
  fine-tuning epochs (the gates train, the last epoch is kept), gate cost per model (``CHANNEL_COSTS``):
  measured synaptic operations before / after, the reduction also counting the masks' own work (the
  importance ranking and the gates: pooling, point-wise gate, compare), the share of channel-steps each gate
  dropped, and the drop; target >= 2x synaptic ops at drop <= 2 points;
* ternary -> binary membrane: PTQ to a ternary membrane (fp32 weights), then the -1 level silenced, no
  fine-tuning: the drop of the binary step;
* joint: prune + ternary membrane + PoT 4-bit weights, two recipes, each step's accuracy in the JSON:
  ``JOINT_RECIPE`` (the row the README reports): 80 % unstructured pruning of the hidden layers on the gradual
  schedule (fp32, ``JOINT_PRUNE_EPOCHS``), then QAT to a ternary membrane and PoT4 weights with learned
  thresholds (``JOINT_QAT_EPOCHS``; the masks are kept); and the one-step recipe it replaced (PTQ to a ternary
  membrane and PoT4, then 80 % pruning with the pruned layers' PoT4 trained in the same 3-epoch fine-tuning,
  thresholds fixed): total memory reduction against fp32 (the paper's headline: 13x at < 1.8 points) and the
  drop against fp32.

Cost: one fine-tuning epoch of the pruned model (masks kept after every step) against one QAT epoch of the
same model (PoT4 fake-quantized weights, ternary membrane, learned thresholds), timed in turn, median of
3 rounds, 1 torch thread (target: <= 1.3x).

Usage: ``python benchmarks/prune.py [--quick] [--rows unstructured,spatial,channel,binary,joint,cost]
[--models demo,mlp] [--seeds N] [--channel-threshold TH] [--channel-cost C] [--channel-epochs E]
[--out benchmarks/results/prune.json]`` (``--rows channel`` runs the channel-masking row alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import snntorch as snn
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "prune.json"
SEEDS = (0, 1, 2)
EPOCHS = 3
LR = 3e-3
HIDDEN = {"demo": ["3", "7"], "mlp": ["3"]}  # synaptic layers between the first and the last
SPATIAL_DROP, SPATIAL_REDUCTION = 2.0, 2.0
EPOCH_RATIO = 1.3
# the gate's sparsity cost per model, from a short sweep on seed 0 (cost 0.3-2, 3-8 epochs; README): the
# demo loses accuracy fast above 0.5, the MLP drops few channels below 2
CHANNEL_THRESHOLD, CHANNEL_EPOCHS = 0.47, 8
CHANNEL_COSTS = {"demo": 0.5, "mlp": 2.0}
CHANNEL_COST = None  # --channel-cost: one cost for every model instead
# the joint row's recipe, chosen in a short sweep (README) on a held-out 25 % of digits:train (fine-tuned on the
# other 75 %), seeds 0-2: prune first in fp32, where the pruned model recovers fast, then QAT, whose learned
# thresholds recover the ternary membrane (a prune fine-tuning keeps the thresholds fixed)
JOINT_PRUNE_EPOCHS, JOINT_QAT_EPOCHS = 12, 8
ROWS = ("unstructured", "spatial", "channel", "binary", "joint", "cost")


@dataclass
class Row:
    model: str
    name: str
    measured: str
    target: str = "-"
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)


def mlp() -> nn.Sequential:
    """fc(64->256) - Leaky - fc(256->128) - Leaky - fc(128->10) - Leaky(output): all synaptic layers dense."""
    torch.manual_seed(0)
    lif = dict(beta=0.9, init_hidden=True)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), snn.Leaky(**lif), nn.Linear(256, 128), snn.Leaky(**lif),
                         nn.Linear(128, 10), snn.Leaky(**lif, output=True))


def _data():
    from snncompress.data import DataOptions, load_data

    options = DataOptions(time_steps=8, batch_size=128, seed=0)
    return load_data("digits:test", options), load_data("digits:train", options)


def _models(test, train, log, names=("demo", "mlp")):
    from snncompress.fileformat.loading import load_model
    from snncompress.sim.evaluate import evaluate
    from snncompress.sim.training import TrainConfig
    from snncompress.sim.training import train as fit

    models = {}
    if "demo" in names:
        models["demo"] = load_model("demo")
    if "mlp" in names:
        net = mlp()
        start = time.perf_counter()
        fit(net, train, train, TrainConfig(epochs=8, lr=2e-3, seed=0))
        log(f"mlp trained (8 epochs, {time.perf_counter() - start:.0f} s): {evaluate(net, test).accuracy:.2f}% on "
            "test")
        models["mlp"] = net
    return models


def _run(base, recipe, test, train, seed):
    from snncompress.models.membrane import copy_model
    from snncompress.passes.base import PassContext
    from snncompress.pipeline.run import RunOptions, run_recipe

    model = copy_model(base)
    report = run_recipe(model, {"version": 1, "passes": recipe}, PassContext(data=test, train_data=train, seed=seed),
                        RunOptions(model_name="model"))
    return model, report


def _mean(values):
    return statistics.mean(values)


def _per_seed(values, fmt="{:.2f}"):
    return ", ".join(fmt.format(v) for v in values)


def model_rows(name, base, test, train, seeds, log, only=ROWS) -> tuple[list[Row], dict]:
    from snncompress.sim.evaluate import evaluate

    fp32 = evaluate(base, test).accuracy
    rows = [Row(name, "fp32 (reference)", f"{fp32:.2f}%")]
    out: dict[str, Any] = {"fp32_accuracy": fp32}
    hidden = HIDDEN[name]
    prune = {"pass": "prune", "epochs": EPOCHS, "lr": LR}
    for sparsity in (0.5, 0.8, 0.9) if "unstructured" in only else ():
        runs = []
        for seed in seeds:
            _, report = _run(base, [{**prune, "weights_unstructured": sparsity, "targets": hidden}], test, train, seed)
            m, hw = report.steps[0]["metrics"], report.hardware
            runs.append({"seed": seed, "accuracy": m["accuracy_after"], "drop": fp32 - m["accuracy_after"],
                         "memory_reduction": hw["memory_reduction"], "energy_reduction": hw["energy_reduction"],
                         "ops_reduction": hw["ops_reduction"], "ops_skipped": m["ops_skipped"]})
            log(f"{name} unstructured {sparsity:.0%} seed {seed}: {m['accuracy_after']:.2f}%")
        total_sparsity = _model_sparsity(base, hidden, sparsity)
        rows.append(Row(name, f"unstructured {sparsity:.0%} (hidden layers; {total_sparsity:.0%} of all weights)",
                        f"{_mean([r['accuracy'] for r in runs]):.2f}% (drop {_mean([r['drop'] for r in runs]):.2f}; "
                        f"per seed {_per_seed([r['drop'] for r in runs])}); memory "
                        f"{_mean([r['memory_reduction'] for r in runs]):.2f}x, energy "
                        f"{_mean([r['energy_reduction'] for r in runs]):.2f}x, measured ops skipped in pruned layers "
                        f"{_mean([r['ops_skipped'] for r in runs]):.1%}", details={"runs": runs}))
        out[f"unstructured_{sparsity}"] = runs
    if "spatial" in only:
        rows.append(_spatial_row(name, base, fp32, test, train, seeds, log, prune))
        out["spatial"] = rows[-1].details["runs"]
    if "channel" in only:
        more, out["channel"] = channel_rows(name, base, fp32, test, train, seeds, log)
        rows += more
    if "binary" in only:
        rows.append(_binary_row(name, base, test, train))
        out["binary"] = rows[-1].details
    if "joint" in only:
        for row in _joint_row(name, base, fp32, test, train, seeds, log, prune, hidden):
            rows.append(row)
            out[row.details["key"]] = row.details["runs"]
    return rows, out


def _spatial_row(name, base, fp32, test, train, seeds, log, prune) -> Row:
    runs = []
    for seed in seeds:
        _, report = _run(base, [{**prune, "spatial": 0.35}], test, train, seed)
        m = report.steps[0]["metrics"]
        runs.append({"seed": seed, "accuracy": m["accuracy_after"], "drop": fp32 - m["accuracy_after"],
                     "ops_before": m["synaptic_ops_before"], "ops_after": m["synaptic_ops_after"],
                     "reduction": m["synaptic_ops_reduction"], "importance_ops": m["importance_ops"]})
        log(f"{name} spatial 0.35 seed {seed}: {m['accuracy_after']:.2f}%, ops {m['synaptic_ops_reduction']:.2f}x")
    reduction, drop = _mean([r["reduction"] for r in runs]), _mean([r["drop"] for r in runs])
    return Row(name, "spatial 0.35 (no channel masking)",
                    f"synaptic ops {_mean([r['ops_before'] for r in runs]):,.0f} -> "
                    f"{_mean([r['ops_after'] for r in runs]):,.0f} per sample ({reduction:.2f}x; importance ranking "
                    f"{runs[0]['importance_ops']:,} ops), drop {drop:.2f} "
                    f"(per seed {_per_seed([r['drop'] for r in runs])})",
                    f">= {SPATIAL_REDUCTION:.0f}x at drop <= {SPATIAL_DROP:.0f} (paper: > 4.7x; spatial + channel)",
                    reduction >= SPATIAL_REDUCTION and drop <= SPATIAL_DROP, {"runs": runs})


TERNARY = {"pass": "quantize", "membrane_quant": "ternary", "weight_quant": "fp32", "calibration": "none"}


def _binary_row(name, base, test, train) -> Row:
    from snncompress.sim.evaluate import evaluate

    fp32 = evaluate(base, test).accuracy
    _, report = _run(base, [TERNARY, {"pass": "prune", "binary_membrane": True}], test, train, 0)
    t_acc, b_acc = report.steps[0]["metrics"]["accuracy_after"], report.steps[1]["metrics"]["accuracy_after"]
    return Row(name, "ternary -> binary membrane (no fine-tuning; deterministic)",
               f"{t_acc:.2f}% -> {b_acc:.2f}% (drop {t_acc - b_acc:.2f}; fp32 {fp32:.2f}%), membrane 2 -> 1 bit",
               details={"ternary": t_acc, "binary": b_acc})


def joint_recipe(hidden, prune_epochs=JOINT_PRUNE_EPOCHS, qat_epochs=JOINT_QAT_EPOCHS) -> list[dict]:
    """Gradual 80 % pruning of ``hidden`` in fp32, then QAT to a ternary membrane and PoT4 (masks kept)."""
    return [{"pass": "prune", "weights_unstructured": 0.8, "targets": hidden, "schedule": "gradual",
             "epochs": prune_epochs, "lr": LR},
            {"pass": "quantize", "mode": "qat", "membrane_quant": "ternary", "weight_quant": "pot4",
             "epochs": qat_epochs}]


def _joint_row(name, base, fp32, test, train, seeds, log, prune, hidden) -> list[Row]:
    pot4 = {**TERNARY, "weight_quant": "pot4"}
    recipes = {
        "joint": (f"joint: gradual prune 80% hidden ({JOINT_PRUNE_EPOCHS} epochs), then QAT ternary membrane + "
                  f"pot4 weights ({JOINT_QAT_EPOCHS} epochs)", joint_recipe(hidden)),
        "joint_ptq": ("joint, one step: PTQ ternary membrane + pot4, then prune 80% hidden with pot4 trained "
                      f"in the same {EPOCHS}-epoch fine-tuning",
                      [pot4, {**prune, "weights_unstructured": 0.8, "targets": hidden, "weight_quant": "pot4"}]),
    }
    rows = []
    for key, (label, recipe) in recipes.items():
        runs = []
        for seed in seeds:
            _, report = _run(base, recipe, test, train, seed)
            acc, hw = report.steps[-1]["metrics"]["accuracy_after"], report.hardware
            steps = [{"pass": s["pass"], "accuracy_after": s["metrics"]["accuracy_after"]} for s in report.steps]
            runs.append({"seed": seed, "accuracy": acc, "drop": fp32 - acc, "steps": steps,
                         "memory_reduction": hw["memory_reduction"], "energy_reduction": hw["energy_reduction"]})
            each = ", ".join(f"{s['accuracy_after']:.2f}" for s in steps)
            log(f"{name} {key} seed {seed}: {acc:.2f}% (after each step {each}), memory "
                f"{hw['memory_reduction']:.2f}x")
        after = [_mean([r["steps"][i]["accuracy_after"] for r in runs]) for i in range(len(recipe))]
        rows.append(Row(name, label,
                        f"memory {_mean([r['memory_reduction'] for r in runs]):.2f}x vs fp32, energy "
                        f"{_mean([r['energy_reduction'] for r in runs]):.2f}x, accuracy "
                        f"{_mean([r['accuracy'] for r in runs]):.2f}% "
                        f"(drop {_mean([r['drop'] for r in runs]):.2f}; per seed "
                        f"{_per_seed([r['drop'] for r in runs])}; after each step "
                        f"{', '.join(f'{a:.2f}%' for a in after)})", "paper: 13x at < 1.8 points",
                        details={"key": key, "recipe": recipe, "runs": runs}))
    return rows


def channel_rows(name, base, fp32, test, train, seeds, log) -> tuple[list[Row], list]:
    """Spatial 0.35 + channel masking (TH = CHANNEL_THRESHOLD, cost CHANNEL_COST), CHANNEL_EPOCHS epochs:
    measured synaptic ops before / after, also counting the masks' own work (ranking, gates)."""
    runs = []
    cost = CHANNEL_COSTS[name] if CHANNEL_COST is None else CHANNEL_COST
    config = {"pass": "prune", "epochs": CHANNEL_EPOCHS, "lr": LR, "spatial": 0.35,
              "channel_threshold": CHANNEL_THRESHOLD, "channel_cost": cost}
    for seed in seeds:
        _, report = _run(base, [config], test, train, seed)
        m = report.steps[0]["metrics"]
        dropped = {n: c["channels_dropped"] for n, c in m["channel"]["layers"].items()}
        runs.append({"seed": seed, "accuracy": m["accuracy_after"], "drop": fp32 - m["accuracy_after"],
                     "ops_before": m["synaptic_ops_before"], "ops_after": m["synaptic_ops_after"],
                     "reduction": m["synaptic_ops_reduction"], "with_overhead": m["ops_reduction_with_overhead"],
                     "importance_ops": m["importance_ops"], "gate_ops": m["gate_ops"],
                     "channels_dropped": dropped, "energy_reduction": report.hardware["energy_reduction"]})
        log(f"{name} spatial + channel seed {seed}: {m['accuracy_after']:.2f}%, ops {m['synaptic_ops_reduction']:.2f}x "
            f"({m['ops_reduction_with_overhead']:.2f}x with the masks' work), channels dropped {dropped}")
    reduction, drop = _mean([r["reduction"] for r in runs]), _mean([r["drop"] for r in runs])
    overhead = _mean([r["with_overhead"] for r in runs])
    layers = runs[0]["channels_dropped"]
    dropped = ", ".join(f"{n} {_mean([r['channels_dropped'][n] for r in runs]):.0%}" for n in layers)
    row = Row(name, f"spatial 0.35 + channel masking (TH {CHANNEL_THRESHOLD}, cost {cost}, "
                    f"{CHANNEL_EPOCHS} epochs)",
              f"synaptic ops {_mean([r['ops_before'] for r in runs]):,.0f} -> "
              f"{_mean([r['ops_after'] for r in runs]):,.0f} per sample ({reduction:.2f}x; {overhead:.2f}x counting "
              f"the ranking's {runs[0]['importance_ops']:,} and the gates' {runs[0]['gate_ops']:,} ops), "
              f"channel-steps dropped {dropped}, drop {drop:.2f} (per seed {_per_seed([r['drop'] for r in runs])})",
              f">= {SPATIAL_REDUCTION:.0f}x at drop <= {SPATIAL_DROP:.0f} (paper: > 4.7x)",
              reduction >= SPATIAL_REDUCTION and drop <= SPATIAL_DROP, {"runs": runs})
    return [row], runs


def _model_sparsity(base, hidden, sparsity) -> float:
    from snncompress.models.layers import synaptic_layers

    sizes = {n: m.weight.numel() for n, m in synaptic_layers(base)}
    return sum(round(sparsity * v) for n, v in sizes.items() if n in hidden) / sum(sizes.values())


def epoch_cost(name, base, train, rounds, log) -> Row:
    """One pruning fine-tune epoch against one QAT epoch of the same model, timed in turn."""
    from snncompress.models.membrane import copy_model, install_membrane_quantizer
    from snncompress.models.neurons import neuron_layers
    from snncompress.passes.prune_masks import unstructured_mask
    from snncompress.quant.membrane import MembraneQuantizer
    from snncompress.quant.schemes import parse_weight_scheme
    from snncompress.sim.constraints import FakeQuantWeights, LearnableThresholds
    from snncompress.sim.training import TrainConfig
    from snncompress.sim.training import train as fit
    from snncompress.state import get_state

    config = TrainConfig(epochs=1, lr=LR, seed=0)

    def pruned():
        model = copy_model(base)
        masks = get_state(model).masks
        for n in HIDDEN[name]:
            weight = model.get_submodule(n).weight
            masks[f"{n}.weight"] = unstructured_mask(weight, 0.8)
            with torch.no_grad():
                weight.mul_(masks[f"{n}.weight"])
        return model, []  # the masks are the state's: train() keeps them after every step

    def qat():
        from snncompress.models.layers import synaptic_layers

        model = copy_model(base)
        neurons = [n for n, _ in neuron_layers(model)]
        for n in neurons:
            install_membrane_quantizer(model, n, MembraneQuantizer.ternary())
        fq = FakeQuantWeights({f"{n}.weight": parse_weight_scheme("pot4") for n, _ in synaptic_layers(model)},
                              encode=False)
        return model, [fq, LearnableThresholds(neurons, 10.0)]

    times = {"prune": [], "qat": []}
    for _ in range(rounds):
        for key, make in (("prune", pruned), ("qat", qat)):
            model, constraints = make()
            start = time.perf_counter()
            fit(model, train, train, config, constraints=constraints)
            times[key].append(time.perf_counter() - start)
    ratios = [p / q for p, q in zip(times["prune"], times["qat"], strict=True)]
    ratio = statistics.median(ratios)
    p_s, q_s = statistics.median(times["prune"]), statistics.median(times["qat"])
    log(f"{name} epoch: prune {p_s:.2f} s, QAT {q_s:.2f} s")
    return Row(name, "cost: pruning fine-tune epoch / QAT epoch",
               f"{ratio:.2f}x (prune {p_s:.2f} s, QAT {q_s:.2f} s"
               f" per epoch incl. its validation pass; median of {rounds})", f"<= {EPOCH_RATIO}x",
               ratio <= EPOCH_RATIO, {"times": times, "ratios": ratios})


def print_table(rows, meta) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"snncompress prune benchmark{' (--quick: not the benchmark figures)' if meta['quick'] else ''}"
    caption = (f"load average {meta['load_start'][0]:.2f} at start, {meta['load_end'][0]:.2f} at end on "
               f"{meta['cpus']} CPUs; total {meta['seconds']:.0f} s; seeds {meta['seeds']}")
    table = Table(title=title, caption=caption)
    for column in ("model", "row", "measured", "target", "result"):
        table.add_column(column, overflow="fold")
    for row in rows:
        result = "-" if row.passed is None else ("[green]MET[/green]" if row.passed else "[red]MISSED[/red]")
        table.add_row(row.model, row.name, row.measured, row.target, result)
    Console(width=max(Console().width, 160)).print(table)


def main(argv: list[str] | None = None) -> int:
    global CHANNEL_THRESHOLD, CHANNEL_COST, CHANNEL_EPOCHS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, one timing round")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated rows to run (of {', '.join(ROWS)}); the fp32 reference always runs")
    parser.add_argument("--models", default="demo,mlp", help="comma-separated models to run (demo, mlp)")
    parser.add_argument("--channel-threshold", type=float, default=CHANNEL_THRESHOLD)
    parser.add_argument("--channel-cost", type=float, default=None,
                        help=f"the gate's sparsity cost for every model (default: per model, {CHANNEL_COSTS})")
    parser.add_argument("--channel-epochs", type=int, default=CHANNEL_EPOCHS)
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1")
    args = parser.parse_args(argv)
    CHANNEL_THRESHOLD, CHANNEL_COST, CHANNEL_EPOCHS = args.channel_threshold, args.channel_cost, args.channel_epochs
    only = tuple(r.strip() for r in args.rows.split(",") if r.strip())
    unknown = sorted(set(only) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {', '.join(unknown)} (choose from {', '.join(ROWS)})")
    torch.set_num_threads(1)
    started, load_start = time.perf_counter(), os.getloadavg()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {line}", file=sys.stderr, flush=True)

    seeds = SEEDS[:1] if args.quick else tuple(range(args.seeds))
    test, train = _data()
    models = _models(test, train, log, [m.strip() for m in args.models.split(",")])
    rows, results = [], {}
    for name, base in models.items():
        more, results[name] = model_rows(name, base, test, train, seeds, log, only)
        rows += more
        if "cost" in only:
            rows.append(epoch_cost(name, base, train, 1 if args.quick else 3, log))
    channel = {"threshold": CHANNEL_THRESHOLD, "cost": CHANNEL_COST or CHANNEL_COSTS, "epochs": CHANNEL_EPOCHS}
    meta = {"quick": args.quick, "rows": list(only), "seeds": list(seeds), "channel": channel,
            "cpus": os.cpu_count(), "load_start": load_start, "load_end": os.getloadavg(),
            "seconds": time.perf_counter() - started, "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print_table(rows, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows], **results}, indent=2,
                                   default=float) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
