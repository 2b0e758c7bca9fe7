"""Run under ``torchrun --nproc_per_node 2`` by ``test_distributed.py``: each rank checks, with gloo on
the CPU, that the distributed pieces give every rank the same result, then prints ``rank R ok``.

Each rank is given DIFFERENT data where that proves a point: the ranks can only end equal if the
collective (broadcast, all-reduce, DDP's gradient averaging) did its work.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from snncompress.data.loading import DataBundle, DataOptions  # noqa: E402
from snncompress.passes.calibration import AdaRoundSettings, adaround  # noqa: E402
from snncompress.quant.schemes import parse_weight_scheme  # noqa: E402
from snncompress.sim import distributed  # noqa: E402
from snncompress.sim.evaluate import evaluate  # noqa: E402
from snncompress.sim.training import TrainConfig, _validate, train  # noqa: E402
from tests.models import CLASSES, TINY_MODELS, T  # noqa: E402


def bundle(n: int, seed: int) -> DataBundle:
    model = TINY_MODELS["leaky_mlp"]
    x, y = model.example_inputs(n, seed), torch.arange(n) % CLASSES
    return DataBundle(f"s{seed}", TensorDataset(x, y), False, T, CLASSES, DataOptions(time_steps=T, batch_size=4))


def gathered(tensor: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.zeros_like(tensor) for _ in range(distributed.world_size())]
    torch.distributed.all_gather(out, tensor.contiguous())
    return out


def main() -> None:
    torch.set_num_threads(1)
    assert distributed.init_from_env("cpu") and distributed.world_size() == 2
    r = distributed.rank()
    assert distributed.all_reduce_sum([r, 1.0]) == [1.0, 2.0]
    assert distributed.broadcast_object({"from": r}) == {"from": 0}

    # validation: the shards' all-reduced counts are those of the whole set
    model, data = TINY_MODELS["leaky_mlp"].build(), bundle(11, 0)
    whole, split = evaluate(model, data), _validate(model, data)
    assert split.samples == 11 and abs(split.accuracy - whole.accuracy) < 1e-9, (split, whole)
    assert abs(split.loss - whole.loss) < 1e-6, (split.loss, whole.loss)

    # training: each rank starts from different weights and trains on its shard; DDP makes them one model
    model = TINY_MODELS["leaky_mlp"].build()
    with torch.no_grad():
        model[0].weight.add_(0.01 * r)  # DDP broadcasts rank 0's parameters when it wraps the model
    result = train(model, bundle(16, 1), bundle(16, 1), TrainConfig(epochs=2, lr=1e-2, keep_best=False))
    for name, p in model.state_dict().items():
        if p.is_floating_point():
            copies = gathered(p)
            assert torch.equal(copies[0], copies[1]), f"{name} differs between the ranks after training"
    assert result.best_epoch == 2 and len(result.epochs) == 2

    # calibration: rank 1 calibrates on other data, yet ends with rank 0's codes (rank 0 calibrates, broadcasts)
    model = TINY_MODELS["leaky_mlp"].build()
    layers = [(n, model.get_submodule(n), parse_weight_scheme("int3")) for n in ("0", "2")]
    cal = adaround(model, layers, bundle(12, 10 + r), AdaRoundSettings(samples=12, iters=20))
    for name in ("0", "2"):
        codes = gathered(cal.encoded[name].codes.to(torch.int32))
        assert torch.equal(codes[0], codes[1]), f"layer {name}: codes differ between the ranks"
        weights = gathered(model.get_submodule(name).weight.detach())
        assert torch.equal(weights[0], weights[1]), f"layer {name}: weights differ between the ranks"
    print(f"rank {r} ok", flush=True)
    distributed.destroy()


if __name__ == "__main__":
    main()
