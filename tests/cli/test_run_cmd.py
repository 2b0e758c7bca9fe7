"""``snncompress run`` and ``snncompress passes`` through ``snncompress.cli.app.main``: exit codes 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snncompress.fileformat.compressed import read_metadata
from snncompress.passes.registry import registered
from tests.cli.support import cli
from tests.fake_passes import ALL

MODEL = "tests.models:leaky_mlp"
DATA = "tests.models:static_dataset"
RECIPE = """version: 1
passes:
  - pass: scale
    factor: 2
  - pass: sparsify
    sparsity: 0.75
"""


@pytest.fixture(autouse=True)
def fake_passes():
    with registered(ALL[0]), registered(ALL[1]), registered(ALL[2]):
        yield


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path




def run_args(recipe: Path, out: Path, *extra: str) -> list[str]:
    return ["run", MODEL, "--recipe", recipe, "--data", DATA, "-T", "3", "-o", out, "--quiet", *extra]


def test_run_writes_output_json_and_history(capsys, tmp_path, recipe):
    out, report = tmp_path / "out.safetensors", tmp_path / "run.json"
    code, stdout, _ = cli(capsys, *run_args(recipe, out, "--gate", "max-accuracy-drop=100",
                                            "--gate", "min-memory-reduction=1.1", "--json", report))
    assert code == 0, stdout
    history = read_metadata(out)["history"]
    assert [(h["pass"], h["origin"], h["version"]) for h in history] == [("scale", "tests", "2"),
                                                                         ("sparsify", "tests", "1")]
    assert history[1]["config"]["sparsity"] == 0.75
    payload = json.loads(report.read_text())
    assert payload["steps"] == history and payload["output"] == str(out)
    assert [g["passed"] for g in payload["gates"]] == [True, True]
    assert payload["figures"]["memory_reduction"] > 1.1
    assert "PASS max-accuracy-drop=100 passed" in stdout


def test_failed_gate_exits_1_after_writing(capsys, tmp_path, recipe):
    out, report = tmp_path / "out.safetensors", tmp_path / "run.json"
    code, _, err = cli(capsys, *run_args(recipe, out, "--gate", "min-memory-reduction=1000",
                                         "--json", report))
    assert code == 1
    assert out.exists() and json.loads(report.read_text())["gates"][0]["passed"] is False
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: quality gate min-memory-reduction=1000 failed: memory reduction")


def test_bad_gate_exits_2_before_running(capsys, tmp_path, recipe):
    out = tmp_path / "out.safetensors"
    code, _, err = cli(capsys, *run_args(recipe, out, "--gate", "max-accuracy-dorp=1"))
    assert code == 2 and "did you mean 'max-accuracy-drop'?" in err
    assert not out.exists()


def test_bad_recipe_lists_every_problem(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npasses:\n  - pass: sparsify\n    sparsity: 1\n  - pass: scal\n"
                   "  - pass: scale\n    factr: 2\n")
    code, _, err = cli(capsys, *run_args(bad, tmp_path / "out.safetensors"))
    assert code == 2
    assert err.splitlines() == [
        f"error: invalid recipe {bad} (4 problems):",
        "  passes[0].sparsity: must be < 1.0 (got 1)",
        "  passes[1].pass: unknown pass 'scal'; did you mean 'scale'?",
        "  passes[2].factr: unknown key; did you mean 'factor'?",
        "  passes[0]: 'sparsify' must come after 'scale' (passes[2]); "
        "sequence: [0] sparsify -> [1] ? -> [2] scale",
    ]


def test_existing_output_needs_force(capsys, tmp_path, recipe):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"x")
    code, _, err = cli(capsys, *run_args(recipe, out))
    assert code == 2 and "pass --force" in err
    assert cli(capsys, *run_args(recipe, out, "--force"))[0] == 0


def test_set_and_check(capsys, tmp_path, recipe):
    code, stdout, err = cli(capsys, "run", MODEL, "--recipe", recipe, "--check",
                            "--set", "sparsify.sparsity=0.5")
    assert code == 0 and "valid (2 step(s): scale -> sparsify)" in err
    assert "sparsity: 0.5" in stdout
    code, _, err = cli(capsys, "run", MODEL, "--recipe", recipe, "--check", "--set", "scale.factor=0")
    assert code == 2 and "passes[0].factor: must be > 0.0 (got 0)" in err


def test_json_to_stdout_and_failing_pass(capsys, tmp_path, recipe):
    code, stdout, _ = cli(capsys, *run_args(recipe, tmp_path / "a.safetensors", "--json", "-"))
    assert code == 0 and json.loads(stdout)["recipe"]["passes"][0]["pass"] == "scale"
    boom = tmp_path / "boom.yaml"
    boom.write_text("version: 1\npasses:\n  - pass: explode\n")
    code, _, err = cli(capsys, *run_args(boom, tmp_path / "b.safetensors"))
    assert code == 1 and "passes[0] (explode) from tests failed: RuntimeError: boom" in err


def test_help_has_a_worked_example(capsys):
    code, stdout, _ = cli(capsys, "run", "--help")
    assert code == 0 and "snncompress run demo --recipe examples/spquant.yaml" in stdout
    code, stdout, _ = cli(capsys, "passes", "-h")
    assert code == 0 and "snncompress passes --json" in stdout


def test_passes_lists_in_process_passes(capsys):
    code, stdout, _ = cli(capsys, "passes", "--json", "-")
    assert code == 0
    listed = {p["name"]: p for p in json.loads(stdout)["passes"]}
    scale = listed["scale"]
    assert (scale["origin"], scale["version"], scale["summary"]) == ("tests", "2", "Scale weights.")
    assert scale["config_schema"]["properties"]["factor"]["exclusiveMinimum"] == 0
    assert listed["sparsify"]["after"] == ["scale"] and listed["sparsify"]["max_per_recipe"] == 1
    code, stdout, _ = cli(capsys, "passes", "sparsify")
    assert code == 0 and "sparsity" in stdout and "after scale" in stdout
    code, _, err = cli(capsys, "passes", "sparsfy")
    assert code == 2 and "did you mean 'sparsify'?" in err
