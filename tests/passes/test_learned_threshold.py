"""QAT with learned layer-wise thresholds (SpQuant §4.4) over fixed membrane levels; the training loop's
learning-rate schedule, per-parameter learning rates and best-epoch tie-break."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import snncompress.sim.training as training_module
from snncompress.fileformat.compressed import save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.models.neurons import neuron_layers
from snncompress.passes.base import PassContext
from snncompress.pipeline.run import RunOptions, run_single_pass
from snncompress.sim.evaluate import evaluate
from snncompress.sim.runner import SNNRunner
from snncompress.sim.training import TrainConfig, train
from snncompress.state import get_state
from tests.models import TINY_MODELS
from tests.passes.test_quantize import bundle, run

OPTIONS = RunOptions(hardware=False)
QAT = {"mode": "qat", "epochs": 2, "lr": 0.05, "weight_quant": "pot4", "membrane_quant": "int4"}


def qat(name: str, config: dict):
    model = load_model(TINY_MODELS[name].ref)
    data = bundle(name, n=16)  # trained on the evaluation data: some epoch beats the start
    report = run_single_pass("quantize", model, config, PassContext(data=data, train_data=data, seed=0), OPTIONS)
    return model, report.steps[0]["metrics"]


class StoredValues:
    """Forward hooks after the quantizer's: every stored membrane value of each neuron layer."""

    def __init__(self, model):
        self.values = {}
        for name, module in neuron_layers(model):
            module.register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(module, _inputs, _output):
            self.values.setdefault(name, []).append(module.mem.detach().clone())
        return hook


@pytest.mark.parametrize("name", ["leaky_mlp", "synaptic_mlp", "rleaky_mlp", "tutorial_sequence_net"])
def test_qat_learns_thresholds_over_fixed_levels(tmp_path, name):
    model, metrics = qat(name, {**QAT, "threshold_lr_scale": 20})
    moved = {k: v for k, v in metrics["thresholds"].items() if v["after"] != v["before"]}
    assert moved, metrics["thresholds"]
    state = get_state(model)
    for layer, module in neuron_layers(model):
        assert "threshold" in dict(module.named_buffers())  # a buffer again, as the model was written
        assert not isinstance(module.threshold, torch.nn.Parameter)
        before = metrics["thresholds"][layer]["before"]
        assert state.neurons[layer]["membrane_unit"] == pytest.approx(before / state.neurons[layer]["membrane_grid"])
    recorder = StoredValues(model)
    run(model, name)
    for layer, values in recorder.values.items():
        unit = state.neurons[layer]["membrane_unit"]
        levels = torch.cat([v.reshape(-1) for v in values]) / unit
        assert torch.allclose(levels, levels.round(), atol=1e-4), layer  # on the installed grid
        assert levels.min() >= -8 and levels.max() <= 7
    # the file keeps the learned threshold and the fixed levels: identical spikes after loading
    loaded = load_model(str(save_compressed(model, tmp_path / "q.safetensors")), trust_code=True)
    assert get_state(loaded).neurons == state.neurons
    assert torch.equal(run(model, name).spikes, run(loaded, name).spikes)
    assert evaluate(loaded, bundle(name, n=16)).accuracy == metrics["accuracy_after"]


def test_fixed_threshold_leaves_thresholds_alone():
    model, metrics = qat("leaky_mlp", {**QAT, "learn_threshold": False})
    assert "thresholds" not in metrics
    assert all(float(m.threshold) == 1.0 for _, m in neuron_layers(model))


def test_a_user_learned_threshold_stays_a_parameter():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    layer = model.get_submodule("1")
    value = layer.threshold.detach().clone()
    del layer.threshold
    layer.threshold = torch.nn.Parameter(value)
    data = bundle("leaky_mlp", n=16)
    report = run_single_pass("quantize", model, QAT, PassContext(data=data, train_data=data, seed=0), OPTIONS)
    assert isinstance(model.get_submodule("1").threshold, torch.nn.Parameter)
    assert "1" not in report.steps[0]["metrics"].get("thresholds", {})  # trained with the other parameters


def test_bad_learning_settings_are_refused():
    for bad in ({"threshold_lr_scale": 0}, {"schedule": "linear"}):
        with pytest.raises(Exception, match="threshold-lr-scale|schedule"):
            qat("leaky_mlp", {**QAT, **bad})


# -- the training loop -------------------------------------------------------------------------------------

def test_cosine_schedule_and_per_parameter_learning_rates(monkeypatch):
    created = []
    real_adam = torch.optim.Adam

    def adam(*args, **kwargs):
        created.append(real_adam(*args, **kwargs))
        return created[-1]

    monkeypatch.setattr(training_module.torch.optim, "Adam", adam)
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    data = bundle("leaky_mlp", n=16)
    names = [n for n, p in model.named_parameters()]
    train(model, data, data, TrainConfig(epochs=2, lr=0.01, schedule="cosine", lr_scale={names[0]: 5.0}))
    (optimizer,) = created
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    first = dict(model.named_parameters())[names[0]]
    assert groups[id(first)]["initial_lr"] == pytest.approx(0.05)
    assert all(g["initial_lr"] == pytest.approx(0.01) for g in optimizer.param_groups
               if all(p is not first for p in g["params"]))
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-12) for g in optimizer.param_groups)  # annealed to 0


def test_equal_validation_accuracy_prefers_the_lower_loss(monkeypatch):
    real = training_module.evaluate
    scripted = iter([(50.0, 1.0), (80.0, 0.9), (80.0, 0.5), (80.0, 0.7)])

    def scripted_evaluate(model, data, **kwargs):
        result = real(model, data, **kwargs)
        result.accuracy, result.loss = next(scripted)
        return result

    monkeypatch.setattr(training_module, "evaluate", scripted_evaluate)
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    data = bundle("leaky_mlp", n=16)
    result = train(model, data, data, TrainConfig(epochs=3, lr=0.01))
    assert result.best_epoch == 2 and [e["val_loss"] for e in result.epochs] == [0.9, 0.5, 0.7]


def test_evaluate_reports_the_spike_count_cross_entropy():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    data = bundle("leaky_mlp", n=16)
    result = evaluate(model, data)
    runner = SNNRunner(model)
    losses = []
    with torch.no_grad():
        for x, y in data.loader():
            out = runner.run(x, is_sequence=data.is_sequence, time_steps=data.time_steps)
            losses.append(F.cross_entropy(out.spike_counts, y, reduction="sum"))
    assert result.loss == pytest.approx(float(sum(losses)) / 16, rel=1e-6)
