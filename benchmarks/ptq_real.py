"""PTQ on models written the way snnTorch's tutorials and documentation write them (issue 16, item 1).

Three models, trained here in fp32 (Adam, 20 epochs) on scikit-learn's digits upsampled to 28 x 28 as the
tutorials' MNIST (direct encoding, T = 8), once per seed:

* ``rleaky``: snnTorch's regression tutorial, part II (recurrent LIF classifying by spike counts): a user
  module with its own time loop, ``fc1 - RLeaky(linear_features=128) - fc2 - RLeaky(linear_features=10)``,
  ``beta = 0.9``, reset by subtraction, threshold 1. Each RLeaky holds an all-to-all recurrent ``Linear``.
* ``learned``: the documentation's Sequential with per-neuron learned parameters:
  ``Linear(784, 128) - Leaky(beta=rand(128), learn_beta, threshold=rand(128) + 0.5, learn_threshold) -
  Linear(128, 10) - Leaky(same, output)``, ``init_hidden=True``.
* ``learned_rand``: the same with ``threshold = rand(n)`` (the regression tutorial, part I): some thresholds
  are learned down to ~0.01 while their neighbours stay near 1.

Each is then quantized with PTQ, PoT4 weights and an int4 membrane, the pass defaults otherwise (what
``snncompress quantize MODEL --data digits:test --train-data digits:train --weight-quant pot4
--membrane-quant int4`` does), and with each half alone (weights only, membrane only) to show where a drop
comes from. The trained weights are cached (``$SNNCOMPRESS_PTQ_REAL_CACHE``, default a folder in the
temporary directory), so the factories below are quick after the first call and the CLI can load them:

    snncompress quantize benchmarks.ptq_real:rleaky_seed0 --data benchmarks.ptq_real:digits28_test \\
        --train-data benchmarks.ptq_real:digits28_train \\
        --weight-quant pot4 --membrane-quant int4 -o /tmp/rleaky.safetensors

Run: ``python benchmarks/ptq_real.py [--seeds 0 1 2 3 4] [--out benchmarks/results/ptq_real.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import snntorch as snn
import torch
from torch import nn

TIME_STEPS = 8
HIDDEN = 128
CLASSES = 10
EPOCHS = 20
SEEDS = (0, 1, 2, 3, 4)
SIZE = 28  # the digits upsampled to 28 x 28, as MNIST in the tutorials
INPUTS = SIZE * SIZE


class RLeakyNet(nn.Module):
    """snnTorch's regression tutorial (part II) network over a static ``[B, 1, 8, 8]`` digit: its own time
    loop, explicit spikes and membranes, recurrent LIF layers; returns ``[T, B, 10]`` spikes and membranes."""

    def __init__(self, timesteps: int = TIME_STEPS, hidden: int = HIDDEN, beta: float = 0.9):
        super().__init__()
        self.timesteps = timesteps
        self.fc1 = nn.Linear(INPUTS, hidden)
        self.rlif1 = snn.RLeaky(beta=beta, linear_features=hidden)
        self.fc2 = nn.Linear(hidden, CLASSES)
        self.rlif2 = snn.RLeaky(beta=beta, linear_features=CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        spk1, mem1 = self.rlif1.init_rleaky()
        spk2, mem2 = self.rlif2.init_rleaky()
        spk_rec, mem_rec = [], []
        for _ in range(self.timesteps):
            spk1, mem1 = self.rlif1(self.fc1(x), spk1, mem1)
            spk2, mem2 = self.rlif2(self.fc2(spk1), spk2, mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec), torch.stack(mem_rec)


def learned_sequential(hidden: int = HIDDEN, offset: float = 0.5) -> nn.Sequential:
    """The documentation's Sequential: per-neuron ``beta`` and threshold (``rand + offset``), both learned."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(INPUTS, hidden),
        snn.Leaky(beta=torch.rand(hidden), learn_beta=True, threshold=torch.rand(hidden) + offset,
                  learn_threshold=True, init_hidden=True),
        nn.Linear(hidden, CLASSES),
        snn.Leaky(beta=torch.rand(CLASSES), learn_beta=True, threshold=torch.rand(CLASSES) + offset,
                  learn_threshold=True, init_hidden=True, output=True),
    )


def learned_rand_sequential() -> nn.Sequential:
    """The same with ``threshold = torch.rand(n)`` as the regression tutorial (part I) draws it: some learned
    thresholds end near zero (or below it: such a seed is refused)."""
    return learned_sequential(offset=0.0)


BUILDERS = {"rleaky": RLeakyNet, "learned": learned_sequential, "learned_rand": learned_rand_sequential}


def _upsampled(split: str):
    import torch.nn.functional as F
    from torch.utils.data import TensorDataset

    from snncompress.data.loading import digits_split

    x, y = digits_split(split)
    return TensorDataset(F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1), y)


def digits28_train():
    """scikit-learn's digits training split upsampled to ``[1, 28, 28]`` (bilinear): ``--data`` for the CLI."""
    return _upsampled("train")


def digits28_test():
    """The test split, upsampled the same way."""
    return _upsampled("test")


def _cache() -> Path:
    default = Path(tempfile.gettempdir()) / f"snncompress-ptq-real-{SIZE}"
    return Path(os.environ.get("SNNCOMPRESS_PTQ_REAL_CACHE", default))


def _data():
    from snncompress.data.loading import DataOptions, load_data

    options = DataOptions(time_steps=TIME_STEPS, batch_size=64)
    return (load_data("benchmarks.ptq_real:digits28_train", options),
            load_data("benchmarks.ptq_real:digits28_test", options))


def trained(kind: str, seed: int, log=None) -> nn.Module:
    """Model ``kind`` trained in fp32 with ``seed`` (cached state dict; trained on first use)."""
    from snncompress.sim.training import TrainConfig, train

    torch.manual_seed(seed)  # the constructors draw from the global RNG, as the tutorials do
    model = BUILDERS[kind]()
    path = _cache() / f"{kind}-seed{seed}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train_data, _ = _data()
    start = time.perf_counter()
    result = train(model, train_data, train_data, TrainConfig(epochs=EPOCHS, lr=2e-3, seed=seed, schedule="cosine"))
    if log:
        log(f"trained {kind} seed {seed}: {result.best_accuracy:.2f}% on train, epoch {result.best_epoch}, "
            f"{time.perf_counter() - start:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model.eval()


def _factory(kind: str, seed: int):
    def factory() -> nn.Module:
        return trained(kind, seed)

    factory.__name__ = factory.__qualname__ = f"{kind}_seed{seed}"
    factory.__doc__ = f"The {kind} model trained in fp32 with seed {seed} (see the module docstring)."
    return factory


for _kind in BUILDERS:
    for _seed in range(10):
        globals()[f"{_kind}_seed{_seed}"] = _factory(_kind, _seed)

PTQ = {"weight_quant": "pot4", "membrane_quant": "int4"}
CONFIGS = {
    "ptq pot4 / int4 (defaults)": PTQ,
    "  weights only (fp32 membrane)": {**PTQ, "membrane_quant": "fp32"},
    "  membrane only (fp32 weights)": {**PTQ, "weight_quant": "fp32"},
    "ptq pot4 / int4, membrane_grid auto": {**PTQ, "membrane_grid": "auto"},
    "  membrane only, membrane_grid auto": {**PTQ, "weight_quant": "fp32", "membrane_grid": "auto"},
}


def run(kinds: list[str], seeds: list[int], configs: dict[str, dict], log) -> dict:
    from snncompress.errors import SnnCompressError
    from snncompress.passes.base import PassContext
    from snncompress.pipeline.run import RunOptions, jsonable, run_single_pass
    from snncompress.sim.evaluate import evaluate

    train_data, test = _data()
    results: dict = {}
    for kind in kinds:
        results[kind] = {"fp32": {}, "runs": {}}
        for seed in seeds:
            results[kind]["fp32"][seed] = evaluate(trained(kind, seed, log), test).accuracy
        for label, config in configs.items():
            per_seed = []
            for seed in seeds:
                model = trained(kind, seed)
                ctx = PassContext(data=test, train_data=train_data, seed=seed)
                start = time.perf_counter()
                try:
                    report = run_single_pass("quantize", model, dict(config), ctx,
                                             RunOptions(model_name=f"benchmarks.ptq_real:{kind}_seed{seed}"))
                except SnnCompressError as exc:
                    per_seed.append({"seed": seed, "refused": str(exc)})
                    log(f"{kind} seed {seed} {label.strip()}: refused: {exc}")
                    continue
                step = report.steps[0]
                after = step["metrics"]["accuracy_after"]
                drop = results[kind]["fp32"][seed] - after
                per_seed.append({"seed": seed, "accuracy_after": after, "drop": drop,
                                 "seconds": round(time.perf_counter() - start, 1),
                                 "notes": step.get("notes", []), "metrics": jsonable(step["metrics"])})
                log(f"{kind} seed {seed} {label.strip()}: {after:.2f}% (drop {drop:+.2f})")
            drops = [r["drop"] for r in per_seed if "drop" in r]
            mean = statistics.mean(drops) if drops else None
            results[kind]["runs"][label] = {"config": config, "mean_drop": mean, "drops": drops,
                                            "refused": [r["seed"] for r in per_seed if "refused" in r],
                                            "seeds": per_seed}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--models", nargs="+", choices=list(BUILDERS), default=list(BUILDERS))
    parser.add_argument("--quick", action="store_true", help="the default PTQ row only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    configs = dict(list(CONFIGS.items())[:1]) if args.quick else CONFIGS
    results = run(args.models, args.seeds, configs, log)
    for kind, res in results.items():
        fp32 = statistics.mean(res["fp32"].values())
        print(f"{kind}: fp32 {fp32:.2f}% (mean of seeds {args.seeds})")
        for label, row in res["runs"].items():
            refused = f"; seeds {row['refused']} refused" if row["refused"] else ""
            mean = "-" if row["mean_drop"] is None else f"{row['mean_drop']:.2f}"
            print(f"  {label}: mean drop {mean} (per seed {', '.join(f'{d:.2f}' for d in row['drops'])}{refused})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"seeds": args.seeds, "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
