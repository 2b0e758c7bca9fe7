"""The pass kit: layer selection, symbolic targets, declared requirements, analysis passes, suggestions."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import Field

from snncompress.data.loading import DataBundle
from snncompress.errors import ConfigError
from snncompress.fileformat.loading import load_model
from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec
from snncompress.passes.kit import select_layers
from snncompress.passes.registry import registered
from snncompress.pipeline.run import RunOptions, run_recipe
from snncompress.recipes import Recipe, RecipeError
from snncompress.state import get_state
from tests.models import TINY_MODELS, tiny_bundle

OPTIONS = RunOptions(hardware=False)


bundle = tiny_bundle


class BitsConfig(PassConfig):
    bits: int = Field(4, ge=1, le=32)


def test_select_layers_checks_targets_and_applies_overrides():
    model = load_model(TINY_MODELS["conv2d_net"].ref)
    config = BitsConfig(overrides=[{"targets": ["first", "last"], "bits": 8}])
    chosen = select_layers(model, config, "synaptic")
    names = [s.name for s in chosen]
    assert len(names) >= 2
    assert {s.name: s.config.bits for s in chosen} == {n: 8 if n in (names[0], names[-1]) else 4 for n in names}
    neurons = select_layers(model, BitsConfig(), "neuron")
    assert neurons and all(s.kind == "neuron" for s in neurons)
    with pytest.raises(ConfigError, match=r"targets: no layer named '9x'"):
        select_layers(model, BitsConfig(targets=["9x"]))
    with pytest.raises(ConfigError, match="bad regular expression"):
        select_layers(model, BitsConfig(targets=["re:("]))


def test_symbolic_first_and_last_fit_any_model():
    recipe = {"version": 1, "passes": [{"pass": "quantize", "calibration": "none", "weight_quant": "pot4",
                                        "overrides": [{"targets": ["first", "last"], "weight_quant": "pot8"}]}]}
    for name in ("leaky_mlp", "conv1d_net"):
        model = load_model(TINY_MODELS[name].ref)
        run_recipe(model, recipe, PassContext(data=bundle(name)), OPTIONS)
        tensors = get_state(model).tensors
        weights = [k for k in tensors if k.endswith(".weight")]
        bits = [tensors[k].scheme["bits"] for k in weights]
        assert bits[0] == 8 and bits[-1] == 8 and all(b == 4 for b in bits[1:-1]), (name, bits)


def _needs_membrane(_config):
    return {"quantized_membrane": None}


def test_requirements_are_checked_against_the_passes_before_and_the_model():
    from tests.fake_passes import SCALE

    needy = replace(SCALE, name="needy", requires=_needs_membrane)
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    with registered(SCALE), registered(needy):
        with pytest.raises(ConfigError, match=r"passes\[0\] \(needy\): needs a quantized membrane"):
            run_recipe(model, {"version": 1, "passes": [{"pass": "needy"}]}, PassContext(data=bundle("leaky_mlp")))
        assert not get_state(model).history  # refused before anything ran
        ok = {"version": 1, "passes": [{"pass": "quantize", "calibration": "none"}, {"pass": "needy"}]}
        run_recipe(model, ok, PassContext(data=bundle("leaky_mlp")), OPTIONS)
        assert [h["pass"] for h in get_state(model).history] == ["quantize", "needy"]
        # the model now carries a quantized membrane: a later run needs no quantize step
        run_recipe(model, {"version": 1, "passes": [{"pass": "needy"}]}, PassContext(data=bundle("leaky_mlp")), OPTIONS)


class SuggestConfig(PassConfig):
    clip: float = -1.0


def _suggest(model, config, ctx):
    return PassResult(metrics={"clip": config.clip}, suggestions={"clip": config.clip})


SUGGEST = PassSpec(name="suggest-clip", config_class=SuggestConfig, apply=_suggest, summary="Suggest a clip.",
                   kind="analysis", origin="tests", needs_data=True)


def test_an_analysis_pass_is_not_remeasured_and_its_suggestion_reaches_clip_auto():
    data = bundle("leaky_mlp")
    seen = []

    class Counting(DataBundle):
        def loader(self, shuffle=False, seed=None):
            seen.append(1)
            return super().loader(shuffle, seed)

    data = Counting(data.name, data.dataset, data.is_sequence, data.time_steps, data.num_classes, data.options)
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    recipe = {"version": 1, "passes": [{"pass": "suggest-clip", "clip": -1.0},
                                       {"pass": "quantize", "calibration": "none", "membrane_quant": "int4",
                                        "clip": "auto"}]}
    with registered(SUGGEST):
        report = run_recipe(model, recipe, PassContext(data=data), OPTIONS)
    assert len(seen) == 2  # before, and after quantize: the analysis step is not re-measured
    assert report.steps[0]["suggestions"] == {"clip": -1.0}
    assert report.steps[1]["metrics"]["clip"] == -1.0
    membrane = get_state(model).neurons["1"]["membrane"]
    grid = get_state(model).neurons["1"]["membrane_grid"]
    assert membrane["levels_low"] == -1 * grid  # clipped at -1 x Vth


def test_clip_auto_without_a_suggestion_is_refused():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    recipe = {"version": 1, "passes": [{"pass": "quantize", "membrane_quant": "int4", "clip": "auto"}]}
    with pytest.raises(ConfigError, match="clip: auto takes the clipping boundary an earlier pass suggests"):
        run_recipe(model, recipe, PassContext(data=bundle("leaky_mlp")), OPTIONS)


def test_a_history_from_another_pass_version_is_refused():
    history = [{"pass": "quantize", "version": "0", "config": {"mode": "ptq"}}]
    with pytest.raises(RecipeError, match="recorded by version 0 of the pass"):
        Recipe.from_history(history)
    assert Recipe.from_history([{**history[0], "version": "1"}]).names == ["quantize"]
