"""Recipe documents: validation names every problem by place, ordering rules, round trips."""

from __future__ import annotations

import pytest

from snncompress.errors import ConfigError, InputError
from snncompress.passes.registry import PassRegistry, default_registry
from snncompress.recipes import Recipe, RecipeError, apply_settings
from tests.fake_passes import ALL


@pytest.fixture
def registry() -> PassRegistry:
    reg = PassRegistry(discover=lambda: [])
    for spec in ALL:
        reg.register(spec)
    return reg


def problems(text: str, registry: PassRegistry) -> list[str]:
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml(text, registry=registry, source="r.yaml")
    assert info.value.exit_code == 2 and isinstance(info.value, ConfigError)
    # the message lists every problem, one per line, after a header naming the file
    lines = str(info.value).splitlines()
    assert lines[0].startswith("invalid recipe r.yaml")
    assert [x.strip() for x in lines[1:]] == info.value.problems
    return info.value.problems


def test_valid_recipe(registry):
    recipe = Recipe.from_yaml("""
version: 1
description: two steps
passes:
  - pass: scale
    factor: 2
    overrides:
      - targets: ["re:^2$"]
        factor: 0.5
  - pass: sparsify
    sparsity: 0.25
""", registry=registry)
    assert recipe.names == ["scale", "sparsify"]
    assert recipe.steps[0].config.factor == 2.0
    assert recipe.steps[0].config.for_layer("2").factor == 0.5
    assert recipe.description == "two steps"


def test_value_out_of_range_names_the_place(registry):
    text = "version: 1\npasses:\n  - pass: scale\n  - pass: scale\n  - pass: sparsify\n    sparsity: 1.0\n"
    assert problems(text, registry) == ["passes[2].sparsity: must be < 1.0 (got 1.0)"]


def test_unknown_key_did_you_mean(registry):
    text = "version: 1\npasses:\n  - pass: scale\n    factr: 2\n"
    assert problems(text, registry) == ["passes[0].factr: unknown key; did you mean 'factor'?"]


def test_unknown_pass_did_you_mean(registry):
    text = "version: 1\npasses:\n  - pass: sparsfy\n"
    assert problems(text, registry) == ["passes[0].pass: unknown pass 'sparsfy'; did you mean 'sparsify'?"]


def test_missing_pass_and_bad_types(registry):
    text = "version: 1\npasses:\n  - factor: 2\n  - pass: scale\n    factor: big\n  - 7\n"
    assert problems(text, registry) == [
        "passes[0]: missing 'pass: NAME' (passes: explode, scale, sparsify)",
        "passes[1].factor: must be a number (got 'big')",
        "passes[2]: must be a mapping: 'pass: NAME' plus that pass's keys",
    ]


def test_every_problem_is_listed(registry):
    text = """
version: 2
pases: []
passes:
  - pass: scale
    factor: 0
    overrides:
      - targets: ["re:("]
        factr: 3
      - factor: 3
  - pass: sparsify
    sparsity: -0.1
"""
    found = problems(text, registry)
    assert found[0] == "pases: unknown key; did you mean 'passes'?"
    assert found[1] == "version: recipe version 2 is not supported; this snncompress reads version 1"
    assert "passes[0].factor: must be > 0.0 (got 0)" in found
    assert "passes[0].overrides[1].targets: required" in found
    bad_regex = "passes[0].overrides[0].targets[0]: bad regular expression 're:(': "
    assert any(p.startswith(bad_regex) for p in found)
    assert "passes[0].overrides[0].factr: unknown key; did you mean 'factor'?" in found
    assert "passes[1].sparsity: must be >= 0.0 (got -0.1)" in found


def test_override_value_checked_like_the_step(registry):
    text = ("version: 1\npasses:\n  - pass: scale\n    overrides:\n"
            "      - targets: ['0']\n        factor: 99\n")
    assert problems(text, registry) == ["passes[0].overrides[0].factor: must be <= 10.0 (got 99)"]


def test_version_required_and_top_level_shape(registry):
    assert problems("passes:\n  - pass: scale\n", registry) == [
        "version: required; add 'version: 1' at the top"]
    assert problems("version: 1\n", registry) == [
        "passes: required: a list of steps, each 'pass: NAME' plus that pass's keys"]
    assert problems("version: 1\npasses: []\n", registry) == ["passes: must be a non-empty list of steps"]
    assert problems("- pass: scale\n", registry) == [
        "(top level): must be a mapping with 'version: 1' and 'passes'"]
    assert problems("version: '1'\npasses: [{pass: scale}]\n", registry) == [
        "version: must be the integer 1 (got '1')"]


def test_ordering_rules_show_the_sequence(registry):
    text = "version: 1\npasses:\n  - pass: sparsify\n  - pass: scale\n  - pass: sparsify\n"
    assert problems(text, registry) == [
        "passes[0]: 'sparsify' must come after 'scale' (passes[1]); "
        "sequence: [0] sparsify -> [1] scale -> [2] sparsify",
        "passes[2]: 'sparsify' may appear at most once in a recipe; "
        "sequence: [0] sparsify -> [1] scale -> [2] sparsify",
    ]


def test_before_rule(registry):
    from dataclasses import replace

    registry.register(replace(ALL[0], name="first", before=("scale",)))
    text = "version: 1\npasses:\n  - pass: scale\n  - pass: first\n"
    assert problems(text, registry) == [
        "passes[1]: 'first' must come before 'scale' (passes[0]); sequence: [0] scale -> [1] first"]


def test_bad_yaml_names_the_line(registry):
    with pytest.raises(ConfigError, match=r"^r.yaml:5:4: not valid YAML: expected <block end>"):
        Recipe.from_yaml("version: 1\npasses:\n  - pass: scale\n    factor: 2\n   x: 1\n", registry=registry,
                         source="r.yaml")


def test_round_trip_yaml_and_toml(registry, tmp_path):
    recipe = Recipe.from_yaml("""
version: 1
description: round trip
passes:
  - pass: scale
    factor: 3
    targets: ["0", "re:^2$"]
    overrides:
      - targets: ["2"]
        factor: 0.5
  - pass: sparsify
""", registry=registry)
    again = Recipe.from_yaml(recipe.to_yaml(), registry=registry)
    assert again == recipe
    path = recipe.dump(tmp_path / "out.yaml")
    assert Recipe.load(path, registry=registry) == recipe
    with pytest.raises(InputError, match="exists; pass --force"):
        recipe.dump(path)
    toml = tmp_path / "r.toml"
    toml.write_text('version = 1\ndescription = "round trip"\n[[passes]]\npass = "scale"\nfactor = 3\n'
                    'targets = ["0", "re:^2$"]\n[[passes.overrides]]\ntargets = ["2"]\nfactor = 0.5\n'
                    '[[passes]]\npass = "sparsify"\n')
    assert Recipe.load(toml, registry=registry) == recipe


def test_from_history_rebuilds_the_recipe(registry):
    recipe = Recipe.from_yaml("version: 1\npasses:\n  - {pass: scale, factor: 2}\n  - {pass: sparsify}\n",
                              registry=registry)
    history = [{"pass": s.name, "config": s.config.model_dump(mode="json"), "metrics": {}}
               for s in recipe.steps]
    assert Recipe.from_history(history, registry=registry) == recipe


def test_settings_edit_before_validation(registry):
    data = {"version": 1, "passes": [{"pass": "scale", "factor": 2}, {"pass": "sparsify"}]}
    edited = apply_settings(data, ["scale.factor=4", "1.sparsity=0.75"])
    assert edited["passes"] == [{"pass": "scale", "factor": 4}, {"pass": "sparsify", "sparsity": 0.75}]
    assert data["passes"][0]["factor"] == 2  # the input is not modified
    with pytest.raises(ConfigError, match=r"no step 'prune' \(steps: 0 scale, 1 sparsify\)"):
        apply_settings(data, ["prune.sparsity=0.5"])
    with pytest.raises(ConfigError, match="expected STEP.KEY=VALUE"):
        apply_settings(data, ["factor=3"])


def test_single_pass_problems_are_named_by_flag(registry):
    recipe = Recipe.single("scale", {"factor": 2}, registry=registry)
    assert recipe.names == ["scale"] and recipe.steps[0].config.factor == 2
    with pytest.raises(RecipeError) as info:
        Recipe.single("scale", {"factor": 0, "colour": "red"}, registry=registry)
    assert info.value.problems == ["--factor: must be > 0.0 (got 0)",
                                   "colour: unknown key; keys: factor, overrides, targets"]
    assert str(info.value).startswith("invalid options for 'scale' (2 problems):\n  --factor")
    with pytest.raises(ConfigError, match="unknown pass 'scal'; did you mean 'scale'"):
        Recipe.single("scal", {}, registry=registry)


@pytest.mark.parametrize("name", default_registry().names())
def test_every_registered_pass_round_trips(name):
    """Each registered pass's default config, as a one-step recipe, reads back the same."""
    recipe = Recipe.single(name, {})
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe
