"""run_recipe / run_single_pass: passes chained on one model, history, baseline, errors by step."""

from __future__ import annotations

import pytest
import torch

from snncompress.data import DataOptions, load_data
from snncompress.errors import ConfigError, DomainError
from snncompress.fileformat.compressed import load_compressed, read_metadata, rounded_figures, save_compressed
from snncompress.passes.base import PassContext
from snncompress.passes.registry import registered
from snncompress.pipeline.run import RunOptions, run_recipe, run_single_pass
from snncompress.recipes import Recipe, RecipeError
from snncompress.state import get_state
from tests.fake_passes import ALL
from tests.models import leaky_mlp

TWO_STEPS = {"version": 1, "passes": [{"pass": "scale", "factor": 2.0, "targets": ["0"]},
                                      {"pass": "sparsify", "sparsity": 0.5}]}


@pytest.fixture(autouse=True)
def fake_passes():
    with registered(ALL[0]), registered(ALL[1]), registered(ALL[2]):
        yield


@pytest.fixture
def data():
    return load_data("tests.models:static_dataset", DataOptions(time_steps=3, batch_size=4))


def test_passes_chain_on_one_model_and_are_recorded(data):
    model = leaky_mlp()
    w0 = model[0].weight.detach().clone()
    report = run_recipe(model, TWO_STEPS, PassContext(data=data), RunOptions(model_name="tiny"))
    mask = get_state(model).masks["0.weight"]
    # scale then sparsify acted on the same module: kept weights are the doubled originals
    assert torch.equal(model[0].weight.detach(), (w0 * 2) * mask)
    history = get_state(model).history
    assert [h["pass"] for h in history] == ["scale", "sparsify"]
    assert history[0]["version"] == "2" and history[0]["origin"] == "tests"
    assert history[0]["config"] == {"targets": ["0"], "overrides": [], "factor": 2.0}
    metrics = history[0]["metrics"]
    assert {k: metrics[k] for k in ("layers", "factor")} == {"layers": ["0"], "factor": 2.0}  # tensor made JSON-able
    assert history[1]["metrics"]["zeroed"] > 0
    assert report.steps == history
    # every transform is measured after it: the next pass receives that measurement as ctx.before
    assert metrics["accuracy_before"] == report.before["accuracy"]
    assert history[1]["metrics"]["seen_accuracy"] == metrics["accuracy_after"]
    assert history[1]["metrics"]["accuracy_after"] == report.after["accuracy"]
    baseline = get_state(model).baseline
    assert baseline["accuracy"] == report.before["accuracy"] and baseline["model"] == "tiny"
    assert baseline["parameters"] == sum(p.numel() for p in leaky_mlp().parameters())
    assert report.after["storage_bits"] < report.before["storage_bits"]


def test_history_and_baseline_reach_the_file(tmp_path, data):
    model = leaky_mlp()
    run_recipe(model, TWO_STEPS, PassContext(data=data))
    out = save_compressed(model, tmp_path / "out.safetensors")
    meta = read_metadata(out)
    assert meta["history"] == rounded_figures(get_state(model).history)
    assert meta["baseline"]["accuracy"] == get_state(model).baseline["accuracy"]
    assert Recipe.from_history(meta["history"]) == Recipe.from_dict(TWO_STEPS)
    # continuing from the file keeps its fp32 baseline and appends to the history
    again = load_compressed(out)
    run_recipe(again, {"version": 1, "passes": [{"pass": "scale", "factor": 1.0}]}, PassContext(data=data))
    assert [h["pass"] for h in get_state(again).history] == ["scale", "sparsify", "scale"]
    assert get_state(again).baseline["accuracy"] == meta["baseline"]["accuracy"]


def test_same_seed_same_output(tmp_path, data):
    from safetensors.torch import load_file

    outs = []
    for i in range(2):
        model = leaky_mlp()
        run_recipe(model, TWO_STEPS, PassContext(data=data, seed=3))
        outs.append(save_compressed(model, tmp_path / f"out{i}.safetensors"))
    # same header and tensors (safetensors orders the header's metadata keys arbitrarily, so not the bytes)
    assert read_metadata(outs[0]) == read_metadata(outs[1])
    a, b = load_file(str(outs[0])), load_file(str(outs[1]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_problems_found_before_any_pass_runs():
    model = leaky_mlp()
    w0 = model[0].weight.detach().clone()
    from dataclasses import replace

    with registered(replace(ALL[0], name="needy", needs_data=True)):
        needy = {"pass": "needy", "overrides": [{"targets": ["9"], "factor": 1.0}]}
        recipe = {"version": 1, "passes": [{"pass": "scale", "factor": 2.0}, needy]}
        with pytest.raises(RecipeError) as info:
            run_recipe(model, recipe, PassContext(data=None))
    assert info.value.problems == [
        "passes[1] (needy): needs data; pass --data",
        "passes[1].overrides[0].targets[0]: the model has no module '9'; modules: 0, 1, 2, 3",
    ]
    assert torch.equal(model[0].weight, w0) and not get_state(model).history


def test_a_pass_check_stops_the_run_before_anything_is_measured(data):
    """A step whose config cannot work on this model fails as one line, before the first measurement
    (not after the earlier passes have run): the check sees the model the recipe receives."""
    from dataclasses import replace

    def wide_only(model, config):
        narrow = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features < 5]
        return [f"layer '{n}' is too narrow for this pass" for n in narrow]

    lines = []
    model = leaky_mlp()
    w0 = model[0].weight.detach().clone()
    with registered(replace(ALL[0], name="picky", check=wide_only)):
        with pytest.raises(ConfigError, match=r"^passes\[1\] \(picky\): layer '2' is too narrow for this pass$"):
            run_recipe(model, {"version": 1, "passes": [{"pass": "scale", "factor": 2.0}, {"pass": "picky"}]},
                       PassContext(data=data), RunOptions(log=lines.append))
    assert lines == [] and torch.equal(model[0].weight, w0) and not get_state(model).history


def test_failing_pass_is_named(data):
    with pytest.raises(DomainError, match=r"^passes\[1\] \(explode\) from tests failed: RuntimeError: boom$"):
        run_recipe(leaky_mlp(), {"version": 1, "passes": [{"pass": "scale"}, {"pass": "explode"}]},
                   PassContext(data=data))


def test_pass_config_error_is_named():
    with pytest.raises(ConfigError, match=r"^passes\[0\] \(scale\): targets: no layer named '1'"):
        run_recipe(leaky_mlp(), {"version": 1, "passes": [{"pass": "scale", "targets": ["1"]}]},
                   PassContext(), RunOptions(measure=False))


def test_single_pass_is_a_one_step_recipe(data):
    a, b = leaky_mlp(), leaky_mlp()
    run_single_pass("scale", a, {"factor": 3.0}, PassContext(data=data))
    run_recipe(b, {"version": 1, "passes": [{"pass": "scale", "factor": 3.0}]}, PassContext(data=data))
    assert get_state(a).history == get_state(b).history
    assert torch.equal(a[0].weight, b[0].weight)
    with pytest.raises(RecipeError, match="--factor: must be <= 10.0"):
        run_single_pass("scale", leaky_mlp(), {"factor": 11}, PassContext())


def test_without_data_accuracy_is_not_measured():
    model = leaky_mlp()
    report = run_recipe(model, TWO_STEPS, PassContext())
    assert report.before["accuracy"] is None and report.after["accuracy"] is None
    assert report.after["storage_bits"] < report.before["storage_bits"]
    assert report.hardware is None


def test_quantize_runs_as_a_recipe_step(data):
    from snncompress.passes.registry import default_registry

    if "quantize" not in default_registry():
        pytest.skip("the quantize pass is not registered")
    model = leaky_mlp()
    recipe = {"version": 1, "passes": [{"pass": "scale", "factor": 1.0},
                                       {"pass": "quantize", "mode": "ptq", "membrane_quant": "fp32",
                                        "weight_quant": "int8"}]}
    report = run_recipe(model, recipe, PassContext(data=data))
    assert [s["pass"] for s in report.steps] == ["scale", "quantize"]
    assert get_state(model).tensors["0.weight"].bits == 8
    assert report.after["storage_bits"] < report.before["storage_bits"]


def test_hardware_failure_is_loud_but_not_fatal(data, monkeypatch, capsys):
    import snncompress.pipeline.run as pipeline
    from snncompress.pipeline.gates import gate_metrics

    def broken(*args, **kwargs):
        raise ValueError("no table")

    monkeypatch.setattr(pipeline, "_hardware_figures", broken)
    report = run_recipe(leaky_mlp(), TWO_STEPS, PassContext(data=data))
    assert report.hardware == {"error": "hardware figures unavailable: ValueError: no table"}
    assert "warning: hardware figures unavailable: ValueError: no table" in capsys.readouterr().err
    metrics = gate_metrics(report)
    assert metrics["memory_source"].startswith("stored bits") and metrics["memory_reduction"] > 1
    assert metrics["hardware_error"].endswith("no table")
