"""Training constraints: any fine-tuning keeps the compressions already applied (issue "Passes that compose")."""

from __future__ import annotations

import torch

from snncompress.fileformat.compressed import save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.passes.base import PassContext
from snncompress.pipeline.run import RunOptions, run_single_pass
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.sim.constraints import (
    Constraint,
    FakeQuantWeights,
    KeepMasks,
    LearnableThresholds,
    constraints_for_training,
    state_constraints,
)
from snncompress.sim.training import TrainConfig, train
from snncompress.state import get_state
from tests.models import TINY_MODELS, tiny_bundle

OPTIONS = RunOptions(hardware=False)


def bundle(name: str, n: int = 16, seed: int = 0):
    return tiny_bundle(name, n, seed)


def hand_mask(weight: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Keep about half the weights, chosen at random (a pruning pass's mask, by hand)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(weight.shape, generator=gen) > 0.5


def masked(model, layer="0"):
    weight = model.get_submodule(layer).weight
    mask = hand_mask(weight)
    with torch.no_grad():
        weight.mul_(mask)
    get_state(model).masks[f"{layer}.weight"] = mask
    return mask


def test_qat_after_a_mask_keeps_the_masked_weights_at_zero(tmp_path):
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    mask = masked(model)
    ctx = PassContext(data=bundle("leaky_mlp"), train_data=bundle("leaky_mlp", seed=1))
    report = run_single_pass("quantize", model, {"mode": "qat", "epochs": 2, "lr": 0.05, "weight_quant": "int4"},
                             ctx, OPTIONS)
    weight = model.get_submodule("0").weight.detach()
    assert bool((weight[~mask] == 0).all())
    assert bool((weight[mask] != 0).any())  # not vacuous: the kept weights trained and are still there
    assert report.steps[0]["metrics"]["best_epoch"] >= 0
    enc = get_state(model).tensors["0.weight"]
    assert torch.equal(parse_weight_scheme("int4").decode(enc).reshape(weight.shape), weight)
    loaded = load_model(str(save_compressed(model, tmp_path / "q.safetensors")))
    assert torch.equal(loaded.get_submodule("0").weight, weight)
    assert torch.equal(get_state(loaded).masks["0.weight"], mask)


def test_without_the_state_constraints_training_regrows_pruned_weights():
    """The test above can fail: the same training with the state's constraints switched off grows them back."""
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    mask = masked(model)
    data = bundle("leaky_mlp", seed=1)
    train(model, data, data, TrainConfig(epochs=1, lr=0.05, keep_best=False), keep_state_constraints=False)
    assert bool((model.get_submodule("0").weight.detach()[~mask] != 0).any())


def test_fine_tuning_a_quantized_model_keeps_its_codes_on_the_grid():
    model = load_model(TINY_MODELS["conv1d_net"].ref)
    ctx = PassContext(data=bundle("conv1d_net"), train_data=bundle("conv1d_net", seed=1))
    run_single_pass("quantize", model, {"calibration": "none", "weight_quant": "pot4", "membrane_quant": "int4"},
                    ctx, OPTIONS)
    state = get_state(model)
    before = {k: v.codes.clone() for k, v in state.tensors.items()}
    train(model, bundle("conv1d_net", seed=1), bundle("conv1d_net", seed=1), TrainConfig(epochs=1, lr=0.05))
    pot4 = parse_weight_scheme("pot4")
    changed = 0
    for name, enc in state.tensors.items():
        module, _, attr = name.rpartition(".")
        value = getattr(model.get_submodule(module), attr).detach()
        assert torch.equal(pot4.decode(enc).reshape(value.shape), value), name  # on the grid, re-encoded
        changed += int(not torch.equal(enc.codes, before[name]))
    assert changed  # the fine-tune moved some codes (the check above is not vacuous)


def test_an_explicit_constraint_takes_over_the_state_one_for_its_parameters():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    ctx = PassContext(data=bundle("leaky_mlp"))
    run_single_pass("quantize", model, {"calibration": "none", "weight_quant": "pot4"}, ctx, OPTIONS)
    masked(model, "2")
    assert [type(c) for c in state_constraints(model)] == [FakeQuantWeights, KeepMasks]
    mine = FakeQuantWeights({"0.weight": parse_weight_scheme("int8")})
    active = constraints_for_training(model, [mine])
    quant = [c for c in active if isinstance(c, FakeQuantWeights)]
    assert quant[-1] is mine and set(quant[0].schemes) == {"2.weight"}
    assert any(isinstance(c, KeepMasks) for c in active)


def test_constraint_lifecycle_order_and_detach_on_error():
    calls = []

    class Spy(Constraint):
        def attach(self, model):
            calls.append("attach")

        def after_step(self, model):
            calls.append("after_step")

        def detach(self, model):
            calls.append("detach")

    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    data = bundle("leaky_mlp", n=8)
    train(model, data, data, TrainConfig(epochs=1), constraints=[Spy()])
    assert calls == ["attach", "after_step", "after_step", "detach"]  # 8 samples, batches of 4
    calls.clear()

    class Boom(Constraint):
        def after_step(self, model):
            raise RuntimeError("boom")

    try:
        train(model, data, data, TrainConfig(epochs=1), constraints=[Spy(), Boom()])
    except RuntimeError:
        pass
    assert calls == ["attach", "after_step", "detach"]


def test_learnable_thresholds_train_and_become_buffers_again():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    data = bundle("leaky_mlp")
    constraint = LearnableThresholds(["1", "3"], lr_scale=50.0)
    train(model, data, data, TrainConfig(epochs=2, lr=0.01, keep_best=False), constraints=[constraint])
    assert constraint.learned == ["1", "3"]
    assert any(constraint.before[n] != constraint.after[n] for n in ("1", "3"))
    assert all(not isinstance(model.get_submodule(n).threshold, torch.nn.Parameter) for n in ("1", "3"))
