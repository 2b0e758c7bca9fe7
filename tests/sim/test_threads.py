"""Thread count chosen from the work: one thread for small SNNs, all cores for large steps, overridable."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import TensorDataset

import snncompress.sim.threads as threads
from snncompress.data.loading import DataBundle, DataOptions
from snncompress.errors import InputError
from snncompress.fileformat.loading import load_model
from tests.models import CLASSES, TINY_MODELS, T


def bundle(name: str) -> DataBundle:
    model = TINY_MODELS[name]
    x, y = model.example_inputs(4, 0), torch.arange(4) % CLASSES
    return DataBundle(name, TensorDataset(x, y), model.is_sequence, T, CLASSES, DataOptions(time_steps=T, batch_size=4))


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@pytest.mark.parametrize("name", ["leaky_mlp", "conv2d_net", "tutorial_net"])
def test_small_models_run_on_one_thread(name, monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    model = load_model(TINY_MODELS[name].ref)
    data = bundle(name)
    flops = threads.step_flops(model, data.sample_input(), is_sequence=data.is_sequence, batch_size=4)
    assert 0 < flops < threads.PARALLEL_FLOPS
    assert threads.choose_threads(model, data) == 1
    monkeypatch.setattr(threads, "PARALLEL_FLOPS", flops)  # a step this large uses every core
    assert threads.choose_threads(model, data) == cores()


def test_the_request_and_the_environment_override_the_choice(monkeypatch):
    model, data = load_model(TINY_MODELS["leaky_mlp"].ref), bundle("leaky_mlp")
    assert threads.choose_threads(model, data, requested=1) == 1
    assert threads.choose_threads(model, data, requested=10_000) == cores()
    monkeypatch.setenv(threads.ENV, "1")
    monkeypatch.setattr(threads, "PARALLEL_FLOPS", 0)
    assert threads.choose_threads(model, data) == 1
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(InputError, match="SNNCOMPRESS_THREADS"):
        threads.choose_threads(model, data)


def test_torch_threads_restores_the_previous_count():
    before = torch.get_num_threads()
    with threads.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
