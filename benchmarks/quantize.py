"""Accuracy, file size and speed of the quantize pass on the built-in demo model (issue 4).

Not part of the test suite. ``python benchmarks/quantize.py`` prints one table (measured value,
target, pass / fail per row) and writes ``benchmarks/results/quantize.json``; ``--quick`` is a
short run (fewer epochs and repeats: its figures are not the benchmark's).

Accuracy, on the digits test split (540 samples, T = 8, direct encoding, batch 128: what
``snncompress quantize demo --data digits`` does), drop in points against the fp32 demo model:

* PTQ, PoT 4-bit weights, int4 membrane, the pass defaults otherwise (target: drop <= 0.5); when the
  pass has the ``calibration`` option, once more with each value it does not default to;
* QAT, PoT 4-bit weights, ternary membrane, 10 epochs on digits:train (target: drop <= 1.0);
* QAT, ternary weights, ternary membrane, 10 epochs (no target: what it reaches);
* for information, each half of the PTQ and of the QAT pot4 / ternary config alone (quantized
  weights with an fp32 membrane, a quantized membrane with fp32 weights): where a drop comes from.

QAT trains on all of digits:train and keeps the epoch with the best accuracy there (the pass
default; never the test split). Figures move with the seed (QAT: the shuffling; PTQ: the calibration
samples) by up to a point on 540 test samples, so both target rows are run with seeds 0-7 and judged
on the mean drop; each seed's drop is printed (seed 0 is what ``snncompress quantize`` does by default).

File size, for each output: the ``.safetensors`` size against the ideal packed size of its codes,
``sum(numel x bits) / 8`` over the quantized tensors of the file's header (read with
``read_metadata``). Target: ``size <= 1.15 x ideal + 16 KiB``. The rest of the file is broken down
in the JSON: packing slack (codes padded to whole bytes per tensor), decode parameters (scales,
exponents), dense tensors (biases, neuron parameters, kept fp32) and the safetensors header (the
JSON metadata: model architecture, tensor specs, neuron settings, pass history, baseline).

Speed, in one process with fixed torch threads (``--threads``, default 1), every method timed in
turn within each round after warm-up rounds, medians over rounds (ratios: median of the per-round
ratios):

* the membrane quantizer vs snnTorch ``state_quant`` and vs a bare round/clamp STE, forward +
  backward on 1M float32 elements: ``benchmarks/membrane_speed.py`` (its targets and table);
* one QAT training step of the demo model (batch 128, T = 8; PoT 4-bit weights fake-quantized
  through a parametrization as the pass does, ternary stored membrane, learned thresholds, CE on
  spike counts, Adam)
  against the same step of the plain fp32 snnTorch model (target: <= 1.5x), with the fake-quantized
  weights computed once per step (``parametrize.cached()``) as ``snncompress.sim.training.train`` does;
  for information, the same step recomputing them at every time step.

The machine's load average is printed and stored: timings taken under load are noisy, ratios less so.

Usage: ``python benchmarks/quantize.py [--quick] [--threads 1] [--out benchmarks/results/quantize.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "quantize.json"
SEED = 0
TIME_STEPS = 8
BATCH = 128
PTQ_DROP = 0.5
QAT_POT4_DROP = 1.0
SIZE_FACTOR, SIZE_SLACK = 1.15, 16 * 1024
STEP_RATIO = 1.5


@dataclass
class Row:
    """One line of the table."""

    section: str
    name: str
    measured: str
    target: str = "-"
    passed: bool | None = None  # None: reported, no target
    value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


# -- accuracy and file size ---------------------------------------------------------------------------

def _data():
    from snncompress.data import DataOptions, load_data

    options = DataOptions(time_steps=TIME_STEPS, batch_size=BATCH, seed=SEED)
    return load_data("digits:test", options), load_data("digits:train", options)


TARGET_SEEDS = tuple(range(8))


def _configs(quick: bool) -> list[tuple[str, dict[str, Any], float | None]]:
    """(label, pass config, max drop or None); a config's ``_seeds`` runs it once per seed."""
    from snncompress.passes.quantize import QuantizeConfig

    epochs = 2 if quick else 10
    seeds = list(TARGET_SEEDS[:1] if quick else TARGET_SEEDS)
    mean_of = f"mean of seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"
    ptq = {"weight_quant": "pot4", "membrane_quant": "int4"}
    configs = []
    fields = QuantizeConfig.model_fields
    if "calibration" in fields:
        default = fields["calibration"].default
        configs.append((f"PTQ pot4 / int4 (defaults: calibration={default}), {mean_of}",
                        {**ptq, "_seeds": seeds}, PTQ_DROP))
        for value in ("none", "adaround"):
            if value != default:
                configs.append((f"PTQ pot4 / int4, calibration={value}", {**ptq, "calibration": value}, PTQ_DROP))
    else:
        configs.append(("PTQ pot4 / int4 (defaults)", ptq, PTQ_DROP))
    # where the PTQ drop comes from (information, no target): each half of the PTQ config alone
    configs.append(("  PTQ pot4 weights only (fp32 membrane, defaults)", {**ptq, "membrane_quant": "fp32"}, None))
    configs.append(("  PTQ int4 membrane only (fp32 weights)", {**ptq, "weight_quant": "fp32"}, None))
    configs.append((f"QAT pot4 / ternary, {epochs} epochs, {mean_of}",
                    {"mode": "qat", "weight_quant": "pot4", "membrane_quant": "ternary", "epochs": epochs,
                     "_seeds": seeds},
                    QAT_POT4_DROP))
    qat = {"mode": "qat", "weight_quant": "pot4", "membrane_quant": "ternary", "epochs": epochs}
    configs.append(("  QAT pot4 weights only (fp32 membrane)", {**qat, "membrane_quant": "fp32"}, None))
    configs.append(("  QAT ternary membrane only (fp32 weights)", {**qat, "weight_quant": "fp32"}, None))
    configs.append((f"QAT ternary / ternary, {epochs} epochs",
                    {"mode": "qat", "weight_quant": "ternary", "membrane_quant": "ternary", "epochs": epochs},
                    None))
    return configs


def file_breakdown(path: Path) -> dict[str, int]:
    """Bytes of a compressed file by what they hold; ``ideal`` is ``sum(numel x bits) / 8`` of the codes."""
    import math

    from safetensors import safe_open

    from snncompress.fileformat.compressed import SEP, read_metadata

    meta = read_metadata(path)
    with open(path, "rb") as f:
        header = 8 + struct.unpack("<Q", f.read(8))[0]
    out = {"file": path.stat().st_size, "header": header, "codes_packed": 0, "params": 0, "dense": 0,
           "masks": 0, "ideal": 0, "code_bits": 0}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            nbytes = f.get_tensor(key).numel() * f.get_tensor(key).element_size()
            name, _, part = key.partition(SEP)
            if part == "codes":
                out["codes_packed"] += nbytes
            elif part == "mask":
                out["masks"] += nbytes
            elif part:
                out["params" if meta["tensors"][name]["kind"] == "quantized" else "dense"] += nbytes
            else:
                out["dense"] += nbytes
    for spec in meta["tensors"].values():
        if spec["kind"] == "quantized":
            out["code_bits"] += math.prod(spec["shape"]) * spec["bits"]
    out["ideal"] = math.ceil(out["code_bits"] / 8)
    return out


def accuracy_and_size(quick: bool, log) -> tuple[list[Row], dict[str, Any]]:
    from snncompress.fileformat.compressed import save_compressed
    from snncompress.fileformat.loading import load_model
    from snncompress.passes.base import PassContext
    from snncompress.pipeline.run import RunOptions, run_single_pass
    from snncompress.sim.evaluate import evaluate

    test, train = _data()
    start = time.perf_counter()
    fp32 = evaluate(load_model("demo"), test).accuracy
    log(f"fp32 demo model: {fp32:.2f}% on {len(test)} test samples ({time.perf_counter() - start:.1f} s)")
    rows = [Row("accuracy", "fp32 demo model (reference)", f"{fp32:.2f}%", value=fp32)]
    size_rows, results = [], {"fp32_accuracy": fp32, "test_samples": len(test), "train_samples": len(train),
                              "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (label, config, max_drop) in enumerate(_configs(quick)):
            seeds = config.get("_seeds", [SEED])
            config = {k: v for k, v in config.items() if k != "_seeds"}
            drops, per_seed = [], []
            for seed in seeds:
                model = load_model("demo")
                ctx = PassContext(data=test, train_data=train, seed=seed)
                start = time.perf_counter()
                # as `snncompress quantize` runs it: before / after figures and the hardware baseline go in the file
                report = run_single_pass("quantize", model, config, ctx, RunOptions(model_name="demo"))
                seconds = time.perf_counter() - start
                metrics = report.steps[0]["metrics"]
                after = metrics["accuracy_after"]
                drops.append(fp32 - after)
                per_seed.append({"seed": seed, "accuracy_after": after, "drop": fp32 - after, "seconds": seconds,
                                 "best_epoch": metrics.get("best_epoch"), "metrics": _plain(metrics)})
                log(f"{label} [seed {seed}]: {after:.2f}% (drop {fp32 - after:+.2f}), {seconds:.1f} s")
                if seed == seeds[0]:  # the file of the first seed is the one measured
                    path = save_compressed(model, Path(tmp) / f"run{index}.safetensors")
                    sizes = file_breakdown(path)
            drop = statistics.mean(drops)
            limit = SIZE_FACTOR * sizes["ideal"] + SIZE_SLACK
            extra = ""
            if len(seeds) > 1:
                extra = "; per seed " + ", ".join(f"{d:.2f}" for d in drops)
            elif per_seed[0]["best_epoch"] is not None:
                extra = f", best epoch {per_seed[0]['best_epoch']}"
            target = (f"{'mean ' if len(seeds) > 1 else ''}drop <= {max_drop:.1f}" if max_drop is not None else "-")
            rows.append(Row("accuracy", label, f"{fp32 - drop:.2f}% (drop {drop:.2f}{extra})", target,
                            None if max_drop is None else drop <= max_drop, drop,
                            {"config": config, "seeds": seeds, "drops": drops,
                             "seconds": round(sum(r["seconds"] for r in per_seed), 1)}))
            if sizes["ideal"]:  # an output with quantized tensors
                size_rows.append(Row(
                    "file size", label.strip(), f"{sizes['file']:,} B = {sizes['file'] / sizes['ideal']:.2f}x ideal "
                    f"{sizes['ideal']:,} B (header {sizes['header']:,} B, dense {sizes['dense']:,} B)",
                    f"<= {SIZE_FACTOR}x + 16 KiB ({limit:,.0f} B)", sizes["file"] <= limit,
                    sizes["file"] / sizes["ideal"], sizes))
            results["runs"].append({"label": label, "config": config, "mean_drop": drop, "max_drop": max_drop,
                                    "sizes": sizes, "seeds": per_seed})
    return rows + size_rows, results


def _plain(value: Any) -> Any:
    from snncompress.pipeline.run import jsonable

    return jsonable(value)


# -- speed --------------------------------------------------------------------------------------------

def membrane_rows(quick: bool, threads: int, log) -> tuple[list[Row], list[dict]]:
    sys.path.insert(0, str(HERE))
    import membrane_speed

    start = time.perf_counter()
    result = membrane_speed.run(n=1_000_000, repeats=5 if quick else 15, threads=threads, memory=not quick)
    log(f"membrane quantizer speed: {time.perf_counter() - start:.1f} s")
    membrane_speed._print(result)
    rows = []
    for row in result:
        if "speedup" not in row:
            continue
        rows.append(Row("speed", f"{row['method']} vs {row['reference']} (1M fwd+bwd)",
                        f"{row['speedup']:.1f}x faster ({row['median_ms']:.2f} ms; bare STE {row['ceiling']:.1f}x)",
                        f">= {row['target_speedup']:.0f}x", row["speedup"] >= row["target_speedup"], row["speedup"]))
        rows.append(Row("speed", f"{row['method']} vs bare round/clamp STE", f"{row['vs_bare_ste']:.2f}x the time",
                        f"<= {row['ste_limit']:.0f}x", row["vs_bare_ste"] <= row["ste_limit"], row["vs_bare_ste"]))
    return rows, result


class _FakeQuant(torch.nn.Module):
    """The pass's QAT parametrization: the weight as its scheme quantizes it, straight-through gradient."""

    def __init__(self, scheme):
        super().__init__()
        self.scheme = scheme

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.scheme.fake_quant(w)


def _step_setups():
    from torch.nn.utils import parametrize

    from snncompress.fileformat.loading import load_model
    from snncompress.models.layers import synaptic_layers
    from snncompress.models.membrane import install_membrane_quantizer
    from snncompress.models.neurons import neuron_layers
    from snncompress.passes.quantize import QuantizeConfig, learnable_thresholds
    from snncompress.quant.membrane import membrane_quantizer
    from snncompress.quant.schemes import parse_weight_scheme
    from snncompress.sim.runner import SNNRunner

    def make(quantized: bool):
        model = load_model("demo")
        if quantized:
            quantizer, grid = membrane_quantizer("ternary", None, None)
            for name, _ in neuron_layers(model):
                install_membrane_quantizer(model, name, quantizer, grid)
            for _, module in synaptic_layers(model):
                parametrize.register_parametrization(module, "weight", _FakeQuant(parse_weight_scheme("pot4")))
            learnable_thresholds(model, neuron_layers(model), QuantizeConfig())  # the pass's QAT default
        model.train()
        return model, SNNRunner(model), torch.optim.Adam(model.parameters(), lr=1e-3)

    return {"fp32 snnTorch": (make(False), False), "QAT pot4 + ternary": (make(True), False),
            "QAT, weights cached per step": (make(True), True)}


def qat_step_rows(quick: bool, threads: int, log) -> tuple[list[Row], dict]:
    from torch.nn.utils import parametrize

    from snncompress.sim.training import spike_count_loss

    test, train = _data()
    x, y = next(iter(train.loader()))
    setups = _step_setups()
    times: dict[str, list[float]] = {name: [] for name in setups}
    warmup, repeats = 2, 5 if quick else 15
    start = time.perf_counter()
    for round_index in range(warmup + repeats):
        for name, ((_, runner, optimizer), cached) in setups.items():
            begin = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            if cached:
                with parametrize.cached():
                    loss = spike_count_loss(runner.run(x, is_sequence=False, time_steps=TIME_STEPS), y)
                    loss.backward()
            else:
                loss = spike_count_loss(runner.run(x, is_sequence=False, time_steps=TIME_STEPS), y)
                loss.backward()
            optimizer.step()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - begin)
    log(f"QAT step timing: {time.perf_counter() - start:.1f} s")
    base = "fp32 snnTorch"

    def ratio(name: str) -> float:
        return statistics.median(a / b for a, b in zip(times[name], times[base], strict=True))

    medians = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    qat, cached = ratio("QAT pot4 + ternary"), ratio("QAT, weights cached per step")
    rows = [
        Row("speed", f"QAT step as the pass runs it (fake-quant cached per step; batch {x.shape[0]}, "
            f"T {TIME_STEPS}) vs fp32 snnTorch step",
            f"{cached:.2f}x ({medians['QAT, weights cached per step']:.0f} ms vs {medians[base]:.0f} ms)",
            f"<= {STEP_RATIO}x", cached <= STEP_RATIO, cached),
        Row("speed", "  same without the per-step cache (fake-quant at every time step; info)",
            f"{qat:.2f}x ({medians['QAT pot4 + ternary']:.0f} ms)", "-", None, qat),
    ]
    return rows, {"median_ms": medians, "ratio": qat, "ratio_cached": cached, "repeats": repeats,
                  "warmup": warmup, "batch": int(x.shape[0]), "time_steps": TIME_STEPS,
                  "times_s": times}


# -- output -------------------------------------------------------------------------------------------

def print_table(rows: list[Row], meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = (f"snncompress quantize benchmark{' (--quick: not the benchmark figures)' if meta['quick'] else ''}"
             f" - demo model, digits:test, {meta['threads']} torch thread(s)")
    caption = (f"load average {meta['load_start'][0]:.2f} at start, {meta['load_end'][0]:.2f} at end "
               f"(1 min) on {meta['cpus']} CPUs; total {meta['seconds']:.0f} s")
    table = Table(title=title, caption=caption)
    for column in ("section", "benchmark", "measured", "target", "result"):
        table.add_column(column, overflow="fold")
    for row in rows:
        result = "-" if row.passed is None else ("[green]PASS[/green]" if row.passed else "[red]FAIL[/red]")
        table.add_row(row.section, row.name, row.measured, row.target, result)
    Console(width=max(Console().width, 150)).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 QAT epochs, fewer timing rounds, no memory probes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for everything (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument("--skip-accuracy", action="store_true", help="only the speed rows")
    parser.add_argument("--skip-speed", action="store_true", help="only the accuracy and size rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    started = time.perf_counter()
    load_start = os.getloadavg()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {line}", file=sys.stderr, flush=True)

    log(f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} on {os.cpu_count()} CPUs")
    rows: list[Row] = []
    results: dict[str, Any] = {}
    if not args.skip_accuracy:
        more, results["accuracy"] = accuracy_and_size(args.quick, log)
        rows += more
    if not args.skip_speed:
        more, results["membrane_speed"] = membrane_rows(args.quick, args.threads, log)
        rows += more
        more, results["qat_step"] = qat_step_rows(args.quick, args.threads, log)
        rows += more
    meta = {"quick": args.quick, "threads": args.threads, "cpus": os.cpu_count(), "load_start": load_start,
            "load_end": os.getloadavg(), "seconds": time.perf_counter() - started, "seed": SEED,
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print_table(rows, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": [asdict(r) for r in rows], **results}
    args.out.write_text(json.dumps(_plain(payload), indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
