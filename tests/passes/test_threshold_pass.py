"""The threshold pass (GPW thresholds, SpQuant §4.4) on fp32 and quantized models, QAT's gpw option, the
CLI, and the learned thresholds in the file, ``inspect`` and ``report``."""

from __future__ import annotations

import json

import pytest
import torch

from snncompress.costing.describe import describe_model
from snncompress.fileformat.compressed import read_metadata, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.models.neurons import neuron_layers
from snncompress.passes.base import PassContext
from snncompress.pipeline.run import RunOptions, run_single_pass
from snncompress.quant.base import WeightScheme
from snncompress.sim.summary import summarize
from snncompress.state import get_state
from tests.cli.support import cli
from tests.models import TINY_MODELS
from tests.sim.test_constraints import bundle, masked

OPTIONS = RunOptions(hardware=False)
FAST = {"epochs": 2, "lr": 0.01, "threshold_lr_scale": 50.0, "schedule": "constant"}


def _ctx(name: str) -> PassContext:
    return PassContext(data=bundle(name), train_data=bundle(name, seed=1), seed=0)


def _thresholds(model) -> dict[str, torch.Tensor]:
    return {n: m.threshold.detach().clone() for n, m in neuron_layers(model)}


@pytest.mark.parametrize("window", ["sigmoid", "triangle", "rectangle"])
def test_threshold_pass_moves_fp32_thresholds_and_reports_them(window):
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    before = _thresholds(model)
    report = run_single_pass("threshold", model, {**FAST, "window": window}, _ctx("leaky_mlp"), OPTIONS)
    metrics = report.steps[0]["metrics"]
    after = _thresholds(model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert {n: v["after"] for n, v in metrics["thresholds"].items()} == {n: round(float(t), 6)
                                                                          for n, t in after.items()}
    assert metrics["window"] == window and "accuracy_after" in metrics
    assert all(not isinstance(m.threshold, torch.nn.Parameter) for _, m in neuron_layers(model))


def test_on_a_quantized_model_codes_grids_and_masks_are_kept(tmp_path):
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    mask = masked(model)
    run_single_pass("quantize", model, {"mode": "ptq", "calibration": "none", "weight_quant": "int4",
                                        "membrane_quant": "int4", "neuron_quant": "fixed4.4"},
                    _ctx("leaky_mlp"), OPTIONS)
    state = get_state(model)
    codes_before = {k: state.tensors[k].codes.clone() for k in ("1.threshold", "3.threshold")}
    # a lower threshold lr than FAST's: at 0.5 per step this int4 model stops firing and epoch 0 is kept
    run_single_pass("threshold", model, {**FAST, "threshold_lr_scale": 5.0}, _ctx("leaky_mlp"), OPTIONS)
    state = get_state(model)
    moved = False
    for layer in ("1", "3"):
        enc = state.tensors[f"{layer}.threshold"]
        value = model.get_submodule(layer).threshold
        decoded = WeightScheme.from_dict(enc.scheme).decode(enc).reshape(value.shape)
        assert torch.equal(value, decoded)  # on the fixed4.4 grid: value == decode(codes)
        assert float(value * 16) == round(float(value * 16))
        moved |= not torch.equal(enc.codes, codes_before[f"{layer}.threshold"])
    assert moved
    weight = model.get_submodule("0").weight.detach()
    assert bool((weight[~mask] == 0).all())
    enc = state.tensors["0.weight"]
    assert torch.equal(WeightScheme.from_dict(enc.scheme).decode(enc).reshape(weight.shape), weight)
    assert "membrane" in state.neurons["1"]  # the membrane quantizer is still installed
    # survives save/load bit-exactly, shown by inspect (value and storage) and in the report's description
    path = tmp_path / "t.safetensors"
    save_compressed(model, path)
    loaded = load_model(str(path))
    for layer in ("1", "3"):
        assert torch.equal(loaded.get_submodule(layer).threshold, model.get_submodule(layer).threshold)
    summary = {s.name: s for s in summarize(loaded).layers}
    assert summary["1"].neuron["threshold"] == float(model.get_submodule("1").threshold)
    assert summary["1"].storage["threshold"]["kind"] == enc_kind(state, "1.threshold")
    history = read_metadata(path)["history"]
    assert [h["pass"] for h in history] == ["quantize", "threshold"]


def enc_kind(state, key):
    return state.tensors[key].scheme["kind"]


@pytest.mark.parametrize("gradient", ["surrogate", "gpw"])
def test_qat_learns_thresholds_either_way(gradient):
    model = load_model(TINY_MODELS["synaptic_mlp"].ref)
    before = _thresholds(model)
    report = run_single_pass("quantize", model, {"mode": "qat", "epochs": 2, "lr": 0.05, "weight_quant": "pot4",
                                                 "membrane_quant": "ternary", "threshold_gradient": gradient,
                                                 "threshold_lr_scale": 50.0},
                             _ctx("synaptic_mlp"), OPTIONS)
    after = _thresholds(model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert set(report.steps[0]["metrics"]["thresholds"]) == set(before)


def test_gpw_and_surrogate_qat_differ():
    # same data, seed and config but the threshold gradient: the thresholds learned differ
    out = {}
    for gradient in ("surrogate", "gpw"):
        model = load_model(TINY_MODELS["leaky_mlp"].ref)
        run_single_pass("quantize", model, {"mode": "qat", "epochs": 1, "lr": 0.05, "weight_quant": "pot4",
                                            "threshold_gradient": gradient, "threshold_lr_scale": 50.0},
                        _ctx("leaky_mlp"), OPTIONS)
        out[gradient] = _thresholds(model)
    assert any(not torch.equal(out["surrogate"][n], out["gpw"][n]) for n in out["gpw"])


def test_report_description_carries_the_learned_threshold():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    run_single_pass("threshold", model, FAST, _ctx("leaky_mlp"), OPTIONS)
    desc = describe_model(model, bundle("leaky_mlp"))
    layers = {layer.name: layer for layer in desc.layers}
    assert layers["1"].threshold == (float(model.get_submodule("1").threshold),)


def test_cli_threshold_writes_the_file_and_json(capsys, tmp_path):
    data = "tests.models:static_dataset"
    out, js = tmp_path / "thr.safetensors", tmp_path / "thr.json"
    code, _, err = cli(capsys, "threshold", "tests.models:leaky_mlp", "--data", data, "--train-data", data, "-T", 3,
                       "-o", out, "--epochs", 2, "--lr", 0.01, "--threshold-lr-scale", 50, "--window", "triangle",
                       "--window-width", 0.5, "--json", js, "--quiet")
    assert code == 0, err
    step = json.loads(js.read_text())["steps"][0]
    assert step["config"]["window"] == "triangle" and step["config"]["window_width"] == 0.5
    loaded = load_model(str(out))
    assert {n: v["after"] for n, v in step["metrics"]["thresholds"].items()} == {
        n: round(float(m.threshold), 6) for n, m in neuron_layers(loaded)}
    code, stdout, err = cli(capsys, "report", out, "--data", data, "-T", 3)
    assert code == 0, err
    assert "neuron thresholds (Vth): 1 " in stdout


def test_cli_bad_window_exits_2_and_writes_nothing(capsys, tmp_path):
    data = "tests.models:static_dataset"
    out = tmp_path / "thr.safetensors"
    code, _, err = cli(capsys, "threshold", "tests.models:leaky_mlp", "--data", data, "--train-data", data,
                       "-o", out, "--window", "gauss")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_recipe_quantize_then_threshold(capsys, tmp_path):
    data = "tests.models:static_dataset"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses:\n"
                      "  - pass: quantize\n    mode: qat\n    epochs: 1\n    weight_quant: pot4\n"
                      "    membrane_quant: ternary\n    neuron_quant: fixed4.4\n    threshold_gradient: gpw\n"
                      "  - pass: threshold\n    epochs: 1\n    window: rectangle\n")
    out = tmp_path / "r.safetensors"
    code, _, err = cli(capsys, "run", "tests.models:leaky_mlp", "--recipe", recipe, "--data", data,
                       "--train-data", data, "-T", 3, "-o", out, "--quiet")
    assert code == 0, err
    history = read_metadata(out)["history"]
    assert [h["pass"] for h in history] == ["quantize", "threshold"]
    assert history[0]["config"]["threshold_gradient"] == "gpw"
    loaded = load_model(str(out))
    state = get_state(loaded)
    for layer in ("1", "3"):
        enc = state.tensors[f"{layer}.threshold"]
        value = loaded.get_submodule(layer).threshold
        assert torch.equal(value, WeightScheme.from_dict(enc.scheme).decode(enc).reshape(value.shape))


def test_same_seed_same_thresholds_and_weights():
    def once():
        model = load_model(TINY_MODELS["rleaky_mlp"].ref)
        run_single_pass("threshold", model, FAST, _ctx("rleaky_mlp"), OPTIONS)
        return model.state_dict()

    first, again = once(), once()
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
