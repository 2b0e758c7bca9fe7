"""Label-free fine-tuning (``loss: distill``): the teacher, its targets and their reuse, the loss, the
label-free choice of the best epoch, and refusals."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from snncompress.data.loading import NO_LABEL, DataBundle
from snncompress.errors import ConfigError, DataError
from snncompress.models.membrane import copy_model
from snncompress.sim.distill import (
    IndexedDataset,
    Targets,
    Teacher,
    distill_loss,
    fixed_samples,
    frozen_teacher,
)
from snncompress.sim.runner import RunOutput
from snncompress.sim.training import TrainConfig, train
from tests.models import TINY_MODELS, tiny_bundle


class _Computed(Dataset):
    """The same samples as a TensorDataset, built by code (as a ``module:function`` data set may be)."""

    def __init__(self, bundle: DataBundle):
        self.inner = bundle.dataset

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        return self.inner[i]


def _perturbed(model, seed=0):
    other = copy_model(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3 * p.abs().mean())
    return other


def test_frozen_teacher_is_a_frozen_copy():
    model = TINY_MODELS["leaky_mlp"].build()
    model.train()
    teacher = frozen_teacher(model)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in model.parameters()) and model.training
    with torch.no_grad():
        model[0].weight.add_(1.0)
    assert not torch.equal(teacher[0].weight, model[0].weight)


def test_the_loss_by_temperature_and_the_layer_term():
    counts = torch.tensor([[3.0, 0.0, 1.0], [0.0, 2.0, 2.0]])
    out = RunOutput(spikes=torch.stack([counts / 2, counts / 2]), membrane=None)  # T = 2, the same counts
    # temperature 0 (the default): cross-entropy with the teacher's predicted class (the first on a tie)
    teacher = torch.tensor([[0.0, 5.0, 1.0], [4.0, 0.0, 4.0]])
    log_q = torch.log_softmax(counts, 1)
    expected = -(log_q[0, 1] + log_q[1, 0]) / 2
    assert float(distill_loss(out, Targets(teacher, {}))) == pytest.approx(float(expected))
    # temperature > 0: tau^2 KL(teacher || student) of the softmaxes of counts / tau; zero on the teacher's counts
    for tau in (1.0, 2.0):
        assert float(distill_loss(out, Targets(counts, {}), temperature=tau)) == pytest.approx(0.0, abs=1e-7)
        p, q = torch.softmax(teacher / tau, 1), torch.softmax(counts / tau, 1)
        kl = float((p * (p.log() - q.log())).sum(1).mean())
        assert float(distill_loss(out, Targets(teacher, {}), temperature=tau)) == pytest.approx(tau * tau * kl)
    rates = {"a": torch.zeros(2, 5), "b": torch.ones(2, 3)}
    targets = Targets(counts, {"a": torch.full((2, 5), 0.5), "b": torch.ones(2, 3), "c": torch.zeros(2, 1)})
    layered = distill_loss(out, targets, temperature=1.0, layer_weight=2.0, rates=rates)
    assert float(layered) == pytest.approx(2.0 * (0.25 + 0.0) / 2)  # the mean over the matched layers a, b


def test_targets_are_kept_per_sample_only_where_that_is_exact():
    model = TINY_MODELS["leaky_mlp"].build()
    data = tiny_bundle("leaky_mlp", n=8)
    assert fixed_samples(data.dataset) and fixed_samples(IndexedDataset(torch.utils.data.Subset(data.dataset, [1])))
    assert not fixed_samples(_Computed(data))
    kept = Teacher(frozen_teacher(model), layers=True)
    fresh = Teacher(frozen_teacher(model), layers=True, cache_bytes=0)
    for _ in range(2):
        for index in (torch.tensor([3, 1, 0, 7]), torch.tensor([2, 4, 5, 6]), torch.tensor([1, 2, 3, 4])):
            x = data.dataset.tensors[0][index]
            a, b = kept.targets(x, index, data), fresh.targets(x, index, data)
            assert torch.equal(a.counts, b.counts) and a.rates.keys() == b.rates.keys()
            assert all(torch.equal(a.rates[k], b.rates[k]) for k in a.rates)
    assert kept.teacher_samples == 8 and fresh.teacher_samples == 24
    computed = DataBundle("computed", _Computed(data), False, data.time_steps, None, data.options)
    teacher = Teacher(frozen_teacher(model))
    for _ in range(2):
        teacher.targets(data.dataset.tensors[0][:4], torch.arange(4), computed)
    assert teacher.teacher_samples == 8  # a dataset built by code is never trusted to repeat itself
    small = Teacher(frozen_teacher(model), cache_bytes=8 * 4 * 4 - 1)  # less than 8 samples x 4 counts
    for _ in range(2):
        small.targets(data.dataset.tensors[0][:4], torch.arange(4), data)
    assert small.teacher_samples == 8


def test_distill_trains_without_labels_and_chooses_the_epoch_by_agreement():
    reference = TINY_MODELS["leaky_mlp"].build()
    student = _perturbed(reference)
    data = tiny_bundle("leaky_mlp", n=16, labelled=False)
    assert data.dataset.tensors[1].eq(NO_LABEL).all()  # cross-entropy on these would raise
    result = train(student, data, data, TrainConfig(epochs=3, lr=0.02, loss="distill", schedule="constant"),
                   teacher=frozen_teacher(reference))
    assert result.criterion == "agreement" and len(result.epochs) == 3
    assert all("agreement" in e and "accuracy" not in e for e in result.epochs)
    assert result.best_accuracy >= max(e["agreement"] for e in result.epochs)
    if result.best_epoch:
        assert result.best_accuracy == result.epochs[result.best_epoch - 1]["agreement"]
    assert result.best_metrics() == {"best_epoch": result.best_epoch, "best_val_agreement": result.best_accuracy}
    assert result.teacher_samples == 16  # the targets of the fixed samples were computed once
    from snncompress.sim.fidelity import compare

    assert compare(student, reference, data).agreement == pytest.approx(result.best_accuracy)


def test_the_layer_term_keeps_hidden_firing_closer_to_the_teachers():
    reference = TINY_MODELS["leaky_mlp"].build()
    data = tiny_bundle("leaky_mlp", n=32, labelled=False)
    from snncompress.sim.fidelity import compare

    drift = {}
    for weight in (0.0, 20.0):
        student = _perturbed(reference, seed=3)
        result = train(student, data, data, TrainConfig(epochs=4, lr=0.02, loss="distill", schedule="constant",
                                                        distill_layers=weight, keep_best=False),
                       teacher=frozen_teacher(reference))
        assert result.epochs[-1]["loss"] < result.epochs[0]["loss"]
        drift[weight] = compare(student, reference, data).layers["1"].emd
    assert drift[20.0] < drift[0.0]


def test_the_same_seed_gives_the_same_student():
    reference = TINY_MODELS["leaky_mlp"].build()
    data = tiny_bundle("leaky_mlp", n=12, labelled=False)
    states = []
    for _ in range(2):
        student = _perturbed(reference)
        train(student, data, data, TrainConfig(epochs=2, lr=0.02, loss="distill", distill_layers=0.5),
              teacher=frozen_teacher(reference))
        states.append(student.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_refusals():
    model = TINY_MODELS["leaky_mlp"].build()
    unlabelled = tiny_bundle("leaky_mlp", n=8, labelled=False)
    with pytest.raises(DataError, match="has no labels; loss ce needs them: fine-tune with --loss distill"):
        train(model, unlabelled, unlabelled, TrainConfig(epochs=1))
    labelled = tiny_bundle("leaky_mlp", n=8)
    with pytest.raises(DataError, match="validation data .* has no labels; loss tet"):
        train(model, labelled, unlabelled, TrainConfig(epochs=1, loss="tet"))
    with pytest.raises(ConfigError, match="loss distill trains against a teacher"):
        train(model, unlabelled, unlabelled, TrainConfig(epochs=1, loss="distill"))
    with pytest.raises(ConfigError, match="unknown loss 'kl'"):
        train(model, labelled, labelled, TrainConfig(epochs=1, loss="kl"))
