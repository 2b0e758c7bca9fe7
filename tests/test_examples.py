"""Every recipe in examples/ validates and runs (tiny settings); the CI workflow runs a recipe with gates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from snncompress.cli.app import main
from snncompress.fileformat.compressed import read_metadata
from snncompress.passes.registry import default_registry, registered

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
# sweep-*.yaml are design spaces (snncompress sweep --space), not recipes: tests/sweep/ runs them
RECIPES = sorted(p for p in EXAMPLES.iterdir()
                 if p.suffix in (".yaml", ".yml", ".toml") and not p.name.startswith("sweep-"))
CLUSTER_DIR = REPO / "plugins" / "snncompress-cluster"


def passes_of(path: Path) -> list[str]:
    return [step["pass"] for step in yaml.safe_load(path.read_text())["passes"]]


@pytest.fixture
def example_passes(monkeypatch: pytest.MonkeyPatch):
    """The example plugin's pass, registered in-process when it is not installed."""
    if "cluster" in default_registry():
        yield
        return
    monkeypatch.syspath_prepend(str(CLUSTER_DIR))
    from snncompress_cluster import CLUSTER_PASS

    with registered(CLUSTER_PASS, origin="snncompress-cluster"):
        yield


def test_there_are_paper_recipes():
    assert {"spquant.yaml", "tinysnn.yaml"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_example_recipe_runs(path, tmp_path, capsys, example_passes):
    missing = [name for name in passes_of(path) if name not in default_registry()]
    if missing:
        pytest.skip(f"pass {', '.join(missing)} is not registered (not landed or failed to load)")
    out = tmp_path / "out.safetensors"
    tiny = ["--set", "quantize.epochs=1"] if "quantize" in passes_of(path) else []
    tiny += ["--set", "prune.epochs=1"] if "prune" in passes_of(path) else []
    with pytest.raises(SystemExit) as info:
        main(["run", "demo", "--recipe", str(path), "--data", "digits", "--limit", "32", "-o", str(out),
              "--quiet", *tiny])
    assert info.value.code == 0, capsys.readouterr().err
    assert [h["pass"] for h in read_metadata(out)["history"]] == passes_of(path)


def test_ci_workflow_runs_a_recipe_with_gates():
    workflow = yaml.safe_load((EXAMPLES / "ci" / "compress.yml").read_text())
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    commands = "\n".join(s.get("run", "") for s in steps)
    assert "pip install" in commands
    assert "snncompress run" in commands and "--gate max-accuracy-drop=" in commands
    assert "--gate min-memory-reduction=" in commands
    assert any(str(s.get("uses", "")).startswith("actions/upload-artifact") for s in steps)
    # the recipe it names exists
    recipes = [word for word in commands.split() if word.startswith("examples/") and word.endswith(".yaml")]
    assert recipes and all((REPO / r).is_file() for r in recipes)


def readme_section_commands() -> list[list[str]]:
    """The one-line ``snncompress`` commands of the README's recipes section (comments dropped)."""
    import shlex

    text = (REPO / "README.md").read_text()
    section = text.split("## Recipes, plugins and CI", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```bash\n")[1:]]
    lines = " ".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.strip().startswith("snncompress")]


def test_readme_commands_that_run_quickly(capsys, example_passes):
    """The README's --check and passes commands run (the compressing ones are covered above)."""
    commands = readme_section_commands()
    quick = [c for c in commands if "--check" in c or c[1] == "passes"]
    assert len(quick) >= 3 and any(c[1] == "run" and "--gate" in c for c in commands)
    for command in quick:
        with pytest.raises(SystemExit) as info:
            main(command[1:])
        assert info.value.code == 0, (command, capsys.readouterr().err)
