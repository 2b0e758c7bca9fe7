"""Learned thresholds, four ways, under QAT with a ternary membrane and PoT 4-bit weights (issue 13).

Not part of the test suite. ``python benchmarks/threshold.py`` prints one table and writes
``benchmarks/results/threshold.json``.

Each model is quantized with the quantize pass's QAT (``weight_quant=pot4``, ``membrane_quant=ternary``,
the same epochs, learning rate, training samples and seed for every row), and the thresholds are:

* ``fixed``     -- not learned (``--fixed-threshold``);
* ``surrogate`` -- learned through the spike surrogate and the reset, the QAT default
  (``threshold_gradient: surrogate``, threshold lr x10);
* ``gpw``       -- learned through the Gradient Penalty Window over the neurons that fired, SpQuant
  Eq. 27 (``threshold_gradient: gpw``, sigmoid window W = 1, threshold lr x10);
* ``snntorch``  -- snnTorch's own ``learn_threshold=True`` (the threshold a parameter from the start,
  trained with the weights at the base lr through the surrogate and the reset; QAT's own threshold
  learning off).

Models: the built-in demo (conv, pretrained) and an MLP (64-128-10 Leaky, beta 0.5) trained here on
digits:train in fp32 first (``--mlp-pretrain-epochs``, seed 0). Accuracy on digits:test (540 samples,
T = 8); QAT keeps the best epoch by accuracy on its training samples (the pass default). Several seeds
(QAT's shuffling); the table gives each method's mean over seeds and its mean difference from
``fixed``, in points (one test sample is 0.19 points).

The machine this was written on is 2 shared CPU cores, so the defaults are short (a subset of the
training data, few epochs); the paper's setting (full data sets, long training) is far from it.

Usage: ``python benchmarks/threshold.py [--seeds 0 1 2 3 4] [--demo-epochs 2] [--demo-train 512]
[--mlp-epochs 3] [--mlp-train 640] [--out benchmarks/results/threshold.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import snntorch as snn
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
DEFAULT_OUT = HERE / "results" / "threshold.json"
METHODS = ("fixed", "surrogate", "gpw", "snntorch")
TIME_STEPS = 8


def mlp() -> nn.Sequential:
    def lif(output: bool = False) -> snn.Leaky:
        return snn.Leaky(beta=0.5, init_hidden=True, output=output)

    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), lif(), nn.Linear(128, 10), lif(output=True))


def method_config(method: str, epochs: int, lr: float) -> dict:
    cfg = {"mode": "qat", "weight_quant": "pot4", "membrane_quant": "ternary", "epochs": epochs, "lr": lr}
    if method == "fixed" or method == "snntorch":
        cfg["learn_threshold"] = False
    elif method == "gpw":
        cfg["threshold_gradient"] = "gpw"
    return cfg


def snntorch_learnable(model: nn.Module) -> None:
    """What ``snn.Leaky(..., learn_threshold=True)`` builds: the threshold an ``nn.Parameter``."""
    for module in model.modules():
        if isinstance(module, snn.SpikingNeuron) and not isinstance(module.threshold, nn.Parameter):
            value = module.threshold.detach().clone()
            del module.threshold
            module.threshold = nn.Parameter(value)


def thresholds(model: nn.Module) -> dict[str, float]:
    return {n: round(float(m.threshold.detach().mean()), 4) for n, m in model.named_modules()
            if isinstance(m, snn.SpikingNeuron)}


def run_one(base: nn.Module, method: str, seed: int, epochs: int, lr: float, train_data, test_data) -> dict:
    from snncompress.models.membrane import copy_model
    from snncompress.passes.base import PassContext
    from snncompress.passes.quantize import QUANTIZE_PASS, QuantizeConfig
    from snncompress.sim.evaluate import evaluate

    model = copy_model(base)
    if method == "snntorch":
        snntorch_learnable(model)
    config = QuantizeConfig(**method_config(method, epochs, lr))
    ctx = PassContext(data=test_data, train_data=train_data, seed=seed)
    start = time.perf_counter()
    result = QUANTIZE_PASS.apply(model, config, ctx)
    acc = evaluate(model, test_data).accuracy
    return {"method": method, "seed": seed, "accuracy": acc, "best_epoch": result.metrics["best_epoch"],
            "thresholds": thresholds(model), "seconds": round(time.perf_counter() - start, 1)}


def pretrain_mlp(epochs: int, train_data, test_data) -> tuple[nn.Module, float]:
    from snncompress.sim.training import TrainConfig, train

    torch.manual_seed(0)
    model = mlp()
    result = train(model, train_data, test_data, TrainConfig(epochs=epochs, lr=5e-3, seed=0, keep_best=False))
    return model, result.best_accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--demo-epochs", type=int, default=2)
    parser.add_argument("--demo-train", type=int, default=512, help="digits:train samples the demo's QAT uses")
    parser.add_argument("--mlp-epochs", type=int, default=3)
    parser.add_argument("--mlp-train", type=int, default=640, help="digits:train samples the MLP's QAT uses")
    parser.add_argument("--mlp-pretrain-epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from snncompress.data.loading import DataOptions, load_data
    from snncompress.demo.zoo import pretrained_digits_csnn

    def data(spec: str, limit: int | None = None):
        return load_data(spec, DataOptions(time_steps=TIME_STEPS, batch_size=64, limit=limit))

    test = data("digits:test")
    started = time.perf_counter()
    full_train = data("digits:train")
    mlp_model, mlp_fp32 = pretrain_mlp(args.mlp_pretrain_epochs, full_train, test)
    print(f"MLP fp32: {mlp_fp32:.2f}% after {args.mlp_pretrain_epochs} epochs", file=sys.stderr)
    models = {
        "demo": (pretrained_digits_csnn(), args.demo_epochs, data("digits:train", args.demo_train)),
        "mlp": (mlp_model, args.mlp_epochs, data("digits:train", args.mlp_train)),
    }
    runs = []
    for model_name, (base, epochs, train_data) in models.items():
        for seed in args.seeds:
            for method in METHODS:
                row = {"model": model_name, **run_one(base, method, seed, epochs, args.lr, train_data, test)}
                runs.append(row)
                print(f"{model_name:5s} seed {seed} {method:9s} {row['accuracy']:6.2f}%  ({row['seconds']} s)",
                      file=sys.stderr)
    table = summarize(runs, args.seeds)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(["python benchmarks/threshold.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "demo_train_samples": len(models["demo"][2]), "mlp_train_samples": len(models["mlp"][2]),
        "mlp_fp32_accuracy": mlp_fp32, "runs": runs, "table": table,
        "seconds": round(time.perf_counter() - started, 1), "load_average": os.getloadavg(),
        "torch": torch.__version__, "snntorch": snn.__version__,
    }, indent=1) + "\n")
    return 0


def summarize(runs: list[dict], seeds: list[int]) -> str:
    lines = ["| model | thresholds | accuracy per seed (%) | mean (%) | vs fixed (points) |",
             "|---|---|---|---:|---:|"]
    for model in dict.fromkeys(r["model"] for r in runs):
        acc = {m: [r["accuracy"] for r in runs if r["model"] == model and r["method"] == m] for m in METHODS}
        fixed = statistics.mean(acc["fixed"])
        for m in METHODS:
            mean = statistics.mean(acc[m])
            diffs = [a - f for a, f in zip(acc[m], acc["fixed"], strict=True)]
            vs = "-" if m == "fixed" else f"{mean - fixed:+.2f} (per seed {', '.join(f'{d:+.2f}' for d in diffs)})"
            lines.append(f"| {model} | {m} | {', '.join(f'{a:.2f}' for a in acc[m])} | {mean:.2f} | {vs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
