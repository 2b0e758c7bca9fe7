"""SNNRunner on both model styles, observers, layout resolution, and evaluate()."""

from __future__ import annotations

import pytest
import snntorch as snn
import torch
from torch import nn

from snncompress.data import DataOptions, load_data
from snncompress.errors import DataError, ModelLoadError
from snncompress.models.membrane import copy_model
from snncompress.models.neurons import neuron_layers
from snncompress.sim.evaluate import evaluate, prepare
from snncompress.sim.observers import Recorder, SpikeCounter
from snncompress.sim.runner import SNNRunner, detect_style, resolve_layout
from tests.models import BATCH, CLASSES, TINY_MODELS, T, TutorialNet, leaky_mlp, tutorial_sequence_net

ALL = sorted(TINY_MODELS)


def _run(name: str, runner_model: nn.Module | None = None, **kw):
    tm = TINY_MODELS[name]
    model = runner_model if runner_model is not None else tm.build()
    with torch.no_grad():
        return SNNRunner(model).run(tm.example_inputs(**kw), is_sequence=tm.is_sequence, time_steps=T)


def _manual_stepwise(model: nn.Module, x: torch.Tensor, is_sequence: bool = False):
    """The loop a user would write: call the fresh model once per step."""
    spikes, membranes = [], []
    with torch.no_grad():
        for t in range(x.shape[1] if is_sequence else T):
            out = model(x[:, t] if is_sequence else x)
            spikes.append(out[0])
            membranes.append(out[-1])
    return torch.stack(spikes), torch.stack(membranes)


@pytest.mark.parametrize("name", ALL)
def test_style_and_output_shape(name):
    tm = TINY_MODELS[name]
    model = tm.build()
    out = _run(name, model)
    assert detect_style(model) == tm.style  # a one-step user module's style is found on its first batch
    steps = tm.input_shape[0] if tm.is_sequence else T
    assert out.spikes.shape == (steps, BATCH, CLASSES)
    assert out.membrane is not None and out.membrane.shape == (steps, BATCH, CLASSES)
    assert set(out.spikes.unique().tolist()) <= {0.0, 1.0}
    assert out.spike_counts.shape == (BATCH, CLASSES)
    assert torch.equal(out.predictions(), out.spikes.sum(0).argmax(-1))


@pytest.mark.parametrize("name", [n for n in ALL if TINY_MODELS[n].style == "stepwise"])
def test_stepwise_equals_the_users_own_loop(name):
    tm = TINY_MODELS[name]
    x = tm.example_inputs()
    spikes, membrane = _manual_stepwise(tm.build(), x, tm.is_sequence)
    out = _run(name)
    assert torch.equal(out.spikes, spikes)
    assert torch.equal(out.membrane, membrane)
    assert out.spikes.sum() > 0


def test_stepwise_reads_event_frames_in_time_order():
    x = (torch.rand(BATCH, 5, 8, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    spikes, membrane = _manual_stepwise(leaky_mlp(), x, is_sequence=True)
    with torch.no_grad():
        out = SNNRunner(leaky_mlp()).run(x, is_sequence=True, time_steps=99)
    assert out.spikes.shape == (5, BATCH, CLASSES)
    assert torch.equal(out.spikes, spikes) and torch.equal(out.membrane, membrane)


@pytest.mark.parametrize("name", [n for n in ALL if TINY_MODELS[n].style == "stepwise"])
def test_stepwise_state_is_reset_between_runs_on_copies_and_after_the_registry_is_cleared(name):
    # The runner must reset the model's own neurons: a deep copy is not in snnTorch's global
    # instance list, and neither is a model built before that list was cleared.
    tm = TINY_MODELS[name]
    model = tm.build()
    first = _run(name, model)
    snn.SpikingNeuron.instances.clear()
    again = _run(name, model)
    copied = copy_model(model)
    on_copy_1 = _run(name, copied)
    on_copy_2 = _run(name, copied)
    for out in (again, on_copy_1, on_copy_2):
        assert torch.equal(out.spikes, first.spikes)
        assert torch.equal(out.membrane, first.membrane)


def test_a_smaller_last_batch_does_not_change_earlier_samples():
    model = leaky_mlp()
    x = TINY_MODELS["leaky_mlp"].example_inputs()
    with torch.no_grad():
        full = SNNRunner(model).run(x, is_sequence=False, time_steps=T)
        part = SNNRunner(model).run(x[:1], is_sequence=False, time_steps=T)
    # batch 1 takes another matmul kernel than batch 4: equal up to float rounding, not bit for bit
    torch.testing.assert_close(part.membrane[:, 0], full.membrane[:, 0], rtol=0, atol=1e-5)


def test_sequence_style_static_input_equals_calling_the_model():
    model = TINY_MODELS["tutorial_net"].build()
    x = TINY_MODELS["tutorial_net"].example_inputs()
    with torch.no_grad():
        spk, mem = model(x)
        out = SNNRunner(model).run(x, is_sequence=False, time_steps=50)  # the model loops num_steps itself
    assert out.spikes.shape[0] == model.num_steps == T
    assert torch.equal(out.spikes, spk) and torch.equal(out.membrane, mem)
    assert 0 < out.spikes.sum() < out.spikes.numel()


def test_sequence_style_event_frames_are_passed_time_first():
    model = tutorial_sequence_net()
    x = TINY_MODELS["tutorial_sequence_net"].example_inputs()  # [B, T, 8]
    with torch.no_grad():
        spk, mem = model(x.transpose(0, 1))
        out = SNNRunner(model).run(x, is_sequence=True, time_steps=1)
    assert torch.equal(out.spikes, spk) and torch.equal(out.membrane, mem)


class _BatchFirstRecords(TutorialNet):
    def forward(self, x):
        spk, mem = super().forward(x)
        return spk.transpose(0, 1), mem.transpose(0, 1)


def test_sequence_style_batch_first_records_are_turned_time_first():
    torch.manual_seed(0)
    model = _BatchFirstRecords(num_steps=5)
    x = torch.rand(BATCH, 8)
    with torch.no_grad():
        out = SNNRunner(model).run(x, is_sequence=False, time_steps=1)
    assert out.spikes.shape == (5, BATCH, CLASSES)


class _FlatOutput(TutorialNet):
    def forward(self, x):
        spk, _ = super().forward(x)
        return spk.sum(0)


class _DictOutput(TutorialNet):
    def forward(self, x):
        return {"spk": super().forward(x)[0]}


@pytest.mark.parametrize("cls,match", [(_FlatOutput, r"spike record has shape \[4, 4\].*\[T, B, \.\.\.\]"),
                                       (_DictOutput, "returned dict; expected spikes")])
def test_sequence_style_bad_outputs_are_named(cls, match):
    with pytest.raises(ModelLoadError, match=match):
        SNNRunner(cls()).run(torch.rand(BATCH, 8), is_sequence=False, time_steps=1)


def test_sequential_with_init_hidden_false_is_refused_with_the_layer_name():
    model = nn.Sequential(nn.Linear(8, 4), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(4, 4),
                          snn.Leaky(beta=0.5))
    with pytest.raises(ModelLoadError, match="neuron layer '3' has init_hidden=False"):
        SNNRunner(model)


def test_declared_style_and_unknown_style():
    model = TutorialNet()
    model.snncompress_style = "stepwise"
    assert detect_style(model) == "stepwise"
    assert SNNRunner(TutorialNet(), style="sequence").style == "sequence"
    with pytest.raises(ModelLoadError, match="unknown model style 'clocked'"):
        SNNRunner(leaky_mlp(), style="clocked")


# -- observers ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_observers_see_every_neuron_layer_at_every_step(name):
    tm = TINY_MODELS[name]
    model = tm.build()
    runner = SNNRunner(model)
    recorder, counter = Recorder(), SpikeCounter()
    x = tm.example_inputs()
    with torch.no_grad(), runner.observe(recorder, counter):
        out = runner.run(x, is_sequence=tm.is_sequence, time_steps=T)
    steps = out.spikes.shape[0]
    layers = [n for n, _ in neuron_layers(model)]
    assert [type(m).__name__ for _, m in neuron_layers(model)] == list(tm.neuron_types)
    assert list(recorder.spikes) == layers and list(counter.spikes) == layers
    spikes, membrane = recorder.stacked()
    for layer, module in neuron_layers(model):
        assert spikes[layer].shape[:2] == (steps, BATCH)
        assert membrane[layer].shape == spikes[layer].shape
        # observers get u[t] before reset: a neuron spiked exactly where u[t] crossed its threshold
        assert torch.equal(spikes[layer] > 0, membrane[layer] > module.threshold)
        assert counter.spikes[layer] == float(spikes[layer].sum())
        assert counter.neuron_steps[layer] == spikes[layer].numel()
        assert counter.neurons[layer] == spikes[layer][0, 0].numel()
        assert counter.samples[layer] == BATCH and counter.steps[layer] == steps
        assert counter.firing_rates()[layer] == pytest.approx(float(spikes[layer].mean()))
    last = layers[-1]
    assert torch.equal(spikes[last], out.spikes)
    assert torch.equal(membrane[last], out.membrane)
    # every layer fires somewhere but not everywhere, so the checks above compare real activity
    assert all(0 < counter.firing_rates()[n] < 1 for n in layers)


def test_observers_are_detached_after_the_block():
    model = leaky_mlp()
    runner = SNNRunner(model)
    recorder = Recorder()
    x = TINY_MODELS["leaky_mlp"].example_inputs()
    with torch.no_grad():
        with runner.observe(recorder):
            runner.run(x, is_sequence=False, time_steps=T)
        runner.run(x, is_sequence=False, time_steps=T)
    assert [len(v) for v in recorder.spikes.values()] == [T, T]
    assert all(not m._forward_hooks for _, m in neuron_layers(model))


# -- layout resolution ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,sample_shape,expected", [
    ("leaky_mlp", (8,), False),
    ("leaky_mlp", (5, 8), True),        # event frames [T, features]; a Linear also runs on them as static
    ("leaky_mlp", (8, 8), True),        # T equal to the feature count
    ("conv2d_net", (1, 8, 8), False),
    ("conv2d_net", (2, 1, 8, 8), True),
    ("conv1d_net", (2, 12), False),
    ("conv1d_net", (6, 2, 12), True),
    ("tutorial_net", (8,), False),
    ("tutorial_sequence_net", (3, 8), True),  # its loop would otherwise step over the batch
])
def test_resolve_layout(name, sample_shape, expected):
    runner = SNNRunner(TINY_MODELS[name].build())
    assert resolve_layout(runner, torch.rand(sample_shape), time_steps=T) is expected


@pytest.mark.parametrize("name,sample_shape", [("leaky_mlp", (7,)), ("conv2d_net", (8, 8)),
                                               ("tutorial_net", (5, 8)), ("leaky_mlp", (1, 8, 8))])
def test_resolve_layout_names_samples_that_fit_no_reading(name, sample_shape):
    runner = SNNRunner(TINY_MODELS[name].build())
    with pytest.raises(DataError, match=rf"data samples of shape \[{', '.join(map(str, sample_shape))}\] "
                                        "do not fit the model: "):
        resolve_layout(runner, torch.rand(sample_shape), time_steps=T)


# -- evaluate ---------------------------------------------------------------------------------------------

def _static_bundle(write_tensors, n: int = 10, **opts):
    gen = torch.Generator().manual_seed(5)
    path = write_tensors("static.safetensors", x=torch.rand(n, 8, generator=gen), y=torch.arange(n) % CLASSES)
    return load_data(str(path), DataOptions(time_steps=T, batch_size=4, **opts))


@pytest.mark.parametrize("name",
                         ["leaky_mlp", "synaptic_mlp", "rleaky_mlp", "zero_reset_mlp", "tutorial_net"])
def test_evaluate_matches_the_runner_on_both_styles(name, write_tensors):
    data = _static_bundle(write_tensors)
    model = TINY_MODELS[name].build()
    result = evaluate(model, data)
    x, y = data.dataset.tensors
    with torch.no_grad():
        out = SNNRunner(TINY_MODELS[name].build()).run(x, is_sequence=False, time_steps=T)
    assert result.samples == 10 and result.time_steps == T
    assert result.accuracy == pytest.approx(100.0 * float((out.predictions() == y).sum()) / 10)
    last = [n for n, _ in neuron_layers(model)][-1]
    assert result.neurons[last] == CLASSES
    assert result.firing_rates[last] == pytest.approx(float(out.spikes.mean()))
    assert result.spikes_per_sample[last] == pytest.approx(float(out.spikes.sum()) / 10)
    assert set(result.firing_rates) == {n for n, _ in neuron_layers(model)}
    assert not model.training


def test_evaluate_event_frames_on_both_styles(write_tensors):
    gen = torch.Generator().manual_seed(6)
    x = (torch.rand(6, 4, 8, generator=gen) < 0.5).float()
    path = write_tensors("frames.npz", x=x, y=torch.arange(6) % CLASSES)
    for factory in (leaky_mlp, tutorial_sequence_net):
        data = load_data(str(path), DataOptions(time_steps=T, batch_size=4))
        result = evaluate(factory(), data)
        assert data.is_sequence is True
        assert result.time_steps == 4 and result.samples == 6
        with torch.no_grad():
            out = SNNRunner(factory()).run(x, is_sequence=True, time_steps=T)
        correct = int((out.predictions() == torch.arange(6) % CLASSES).sum())
        assert result.accuracy == pytest.approx(100.0 * correct / 6)


def test_evaluate_refuses_labels_beyond_the_model_outputs(write_tensors):
    path = write_tensors("labels.pt", x=torch.rand(6, 8), y=torch.tensor([0, 1, 2, 3, 4, 5]))
    data = load_data(str(path), DataOptions(time_steps=T))
    with pytest.raises(DataError, match="labels up to 5 but the model has 4 outputs"):
        prepare(leaky_mlp(), data)


def test_evaluate_keeps_training_mode_and_is_deterministic(write_tensors):
    data = _static_bundle(write_tensors, encoding="rate", seed=3)
    model = leaky_mlp().train()
    a = evaluate(model, data)
    assert model.training
    b = evaluate(leaky_mlp(), _static_bundle(write_tensors, encoding="rate", seed=3))
    assert a.to_dict() == b.to_dict()
