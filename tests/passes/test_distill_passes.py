"""``loss: distill`` in every pass that fine-tunes (quantize QAT, threshold, prune), on unlabelled data: the
teacher is the model as the pass received it, the run reports agreement instead of accuracy, and
the run's fidelity figures come from the measurements it takes anyway."""

from __future__ import annotations

import pytest
import torch

import snncompress.sim.distill as distill
from snncompress.fileformat.loading import load_model
from snncompress.passes.base import PassContext
from snncompress.pipeline.run import RunOptions, run_recipe, run_single_pass
from tests.models import TINY_MODELS, tiny_bundle

OPTIONS = RunOptions(hardware=False)
QAT = {"mode": "qat", "epochs": 2, "lr": 0.01, "weight_quant": "int4", "membrane_quant": "int4",
       "loss": "distill", "schedule": "constant"}


def _ctx(name: str, n: int = 16) -> PassContext:
    return PassContext(data=tiny_bundle(name, n, labelled=False), train_data=tiny_bundle(name, n, seed=1,
                                                                                        labelled=False), seed=0)


@pytest.fixture
def teachers(monkeypatch):
    """Every teacher a pass takes, with the model's state dict at that moment."""
    taken = []
    original = distill.frozen_teacher

    def spy(model):
        teacher = original(model)
        taken.append((teacher, {k: v.clone() for k, v in model.state_dict().items()}))
        return teacher

    for module in ("quantize", "threshold", "prune"):
        monkeypatch.setattr(f"snncompress.passes.{module}.frozen_teacher", spy)
    return taken


def _check_label_free_step(report, metric_path=()):
    step = report.steps[0]
    metrics = step["metrics"]
    for key in metric_path:
        metrics = metrics[key]
    assert "best_val_agreement" in metrics and "best_val_accuracy" not in metrics
    assert metrics["distill"]["teacher"] == "the model before this pass"
    top = step["metrics"]
    assert "accuracy_after" not in top and 0.0 <= top["agreement_with_before"] <= 100.0
    assert set(top["firing_drift"]) and all(v >= 0 for v in top["firing_drift"].values())
    assert step["notes"][0].startswith("accuracy n/a (unlabelled data); agreement with the model before: ")
    assert report.before["accuracy"] is None and report.after["accuracy"] is None
    assert round(report.fidelity["agreement"], 6) == top["agreement_with_before"]
    assert report.fidelity["reference"] == "the input model"
    assert {k: round(v["emd"], 6) for k, v in report.fidelity["layers"].items()} == top["firing_drift"]


@pytest.mark.parametrize("name", ["leaky_mlp", "conv2d_net", "one_step_conv_net"])
def test_qat_distill_on_unlabelled_data(name, teachers):
    model = load_model(TINY_MODELS[name].ref)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    report = run_single_pass("quantize", model, QAT, _ctx(name), OPTIONS)
    _check_label_free_step(report)
    (teacher, at_copy), = teachers
    # the teacher is the model as given (BatchNorm not yet folded, nothing quantized), and stays so
    assert at_copy.keys() == original.keys() and all(torch.equal(at_copy[k], original[k]) for k in original)
    assert all(torch.equal(teacher.state_dict()[k], original[k]) for k in original if "mem" not in k)
    assert report.steps[0]["metrics"]["distill"]["teacher_samples"] == 16  # fixed samples: once each


def test_threshold_and_prune_distill_on_unlabelled_data(teachers):
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    report = run_single_pass("threshold", model, {"epochs": 1, "loss": "distill", "distill_layers": 1.0},
                             _ctx("leaky_mlp"), OPTIONS)
    _check_label_free_step(report)
    report = run_single_pass("prune", model, {"weights_unstructured": 0.5, "epochs": 1, "loss": "distill"},
                             _ctx("leaky_mlp"), OPTIONS)
    _check_label_free_step(report, ("fine_tune",))
    gradual = run_single_pass("prune", model, {"weights_unstructured": 0.6, "epochs": 3, "schedule": "gradual",
                                               "loss": "distill"}, _ctx("leaky_mlp"), OPTIONS)
    assert "best_val_agreement" in gradual.steps[0]["metrics"]["fine_tune"]["steady"]
    assert len(teachers) == 3  # one per pass: a gradual prune's ramp and steady phase share theirs
    assert gradual.steps[0]["metrics"]["fine_tune"]["ramp"]["distill"]["teacher_samples"] == 16


def test_a_labelled_loss_on_unlabelled_data_names_the_fix():
    from snncompress.errors import ConfigError

    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    with pytest.raises(ConfigError, match=r"passes\[0\] \(quantize\): the training data leaky_mlp:1 has no labels; "
                                          r"loss ce needs them: fine-tune with loss distill"):
        run_single_pass("quantize", model, {**QAT, "loss": "ce"}, _ctx("leaky_mlp"), OPTIONS)
    recipe = {"version": 1, "passes": [{"pass": "prune", "weights_unstructured": 0.5, "epochs": 0},
                                       {"pass": "threshold", "epochs": 1, "loss": "tet"}]}
    with pytest.raises(ConfigError, match=r"passes\[1\] \(threshold\): .* loss tet needs them"):
        run_recipe(model, recipe, _ctx("leaky_mlp"), OPTIONS)  # the prune step does not train: no complaint


def test_labelled_runs_report_fidelity_beside_accuracy():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    ctx = PassContext(data=tiny_bundle("leaky_mlp", 16), train_data=tiny_bundle("leaky_mlp", 16, seed=1), seed=0)
    recipe = {"version": 1, "passes": [
        {"pass": "prune", "weights_unstructured": 0.5, "epochs": 0},
        {"pass": "quantize", "mode": "ptq", "calibration": "none", "weight_quant": "int8", "membrane_quant": "int8"}]}
    report = run_recipe(model, recipe, ctx, OPTIONS)
    for step in report.steps:
        assert "accuracy_after" in step["metrics"] and "agreement_with_before" in step["metrics"]
        assert not step["notes"][0].startswith("accuracy n/a")
    assert report.fidelity["samples"] == 16 and "correlation" not in next(iter(report.fidelity["layers"].values()))
    assert report.fidelity["agreement"] <= 100.0 and report.before["accuracy"] is not None
