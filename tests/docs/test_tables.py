"""The benchmark tables in the docs and the README are the ones their result files render to
(``docs/hooks/tables.py``), and the check fails when a result file changes."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_tables():
    spec = importlib.util.spec_from_file_location("docs_tables", REPO_ROOT / "docs" / "hooks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tables = _load_tables()

# For every table, one value of a result file that it shows: (file, path to the value, the edited value).
EDITS = {
    "quantize": ("quantize-accuracy.json", ["rows", 1, "measured"], "96.50% (drop 0.72)"),
    "membrane-speed": ("quantize.json", ["membrane_speed", 0, "median_ms"], 5.0),
    "ptq-real": ("ptq_real.json", ["results", "rleaky", "runs", "ptq pot4 / int4 (defaults)", "mean_drop"], 0.5),
    "threshold": ("threshold.json", ["runs", 0, "accuracy"], 50.0),
    "prune": ("prune.json", ["rows", 1, "measured"], "90.00%"),
    "prune-channel": ("prune-channel.json", ["rows", 1, "passed"], False),
    "prune-joint": ("prune-joint.json", ["rows", 1, "target"], "paper: 14x"),
    "shrink": ("shrink.json", ["rows", 0, "parameters"], 13707),
    "scale-epoch": ("scale.json", ["epoch", 0, "ratio"], 1.2),
    "scale-torchrun": ("scale.json", ["torchrun", "difference_samples", 1], 3.0),
    "threads": ("threads.json", ["rows", 0, "seconds"], 30.0),
}


def _edit(results: Path, file: str, path: list, value) -> None:
    data = json.loads((results / file).read_text())
    target = data
    for key in path[:-1]:
        target = target[key]
    assert target[path[-1]] != value
    target[path[-1]] = value
    (results / file).write_text(json.dumps(data))


@pytest.fixture
def results_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(tables.RESULTS, tmp_path / "results"))


def test_docs_tables_match_their_results():
    problems = tables.check(tables.pages(REPO_ROOT))
    assert problems == []


def test_every_table_is_in_the_docs():
    used = tables.used(tables.pages(REPO_ROOT))
    assert sorted(used) == sorted(tables.TABLES)  # each declared table shown, no block naming none


def test_every_table_is_edited_below():
    assert sorted(EDITS) == sorted(tables.TABLES)


@pytest.mark.parametrize("name", sorted(EDITS))
def test_editing_a_shown_value_makes_the_docs_stale(name, results_copy):
    file, path, value = EDITS[name]
    before = tables.render(name, results_copy)
    _edit(results_copy, file, path, value)
    assert tables.render(name, results_copy) != before
    problems = tables.check(tables.used(tables.pages(REPO_ROOT))[name], results_copy)
    assert problems and all(f"table '{name}' differs from" in p for p in problems)


def test_check_command_fails_on_an_edited_result_and_write_repairs(results_copy, tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n<!-- table:shrink -->\n<!-- /table -->\n\ntext after\n")
    assert tables.main(["--write", "--results", str(results_copy), str(page)]) == 0
    assert "| demo | structured 50% hidden, masked | 89.07% | 13,706 |" in page.read_text()
    assert page.read_text().endswith("<!-- /table -->\n\ntext after\n")
    assert tables.main(["--check", "--results", str(results_copy), str(page)]) == 0

    _edit(results_copy, "shrink.json", ["rows", 0, "accuracy"], 90.0)
    capsys.readouterr()
    assert tables.main(["--check", "--results", str(results_copy), str(page)]) == 1
    assert f"error: {page}: table 'shrink' differs from shrink.json" in capsys.readouterr().err
    assert tables.main(["--write", "--results", str(results_copy), str(page)]) == 0
    assert "| demo | structured 50% hidden, masked | 90.00% |" in page.read_text()
    assert tables.main(["--check", "--results", str(results_copy), str(page)]) == 0


def test_a_hand_edit_inside_a_block_is_stale(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- table:threads -->\n<!-- /table -->\n")
    tables.main(["--write", str(page)])
    page.write_text(page.read_text().replace("| 22.0 |", "| 12.0 |"))
    assert tables.check([page]) == [f"{page}: table 'threads' differs from threads.json "
                                     f"(run `{tables.WRITE_COMMAND}`)"]


@pytest.mark.parametrize("text, message", [
    ("<!-- table:no-such -->\n<!-- /table -->\n", "unknown table 'no-such'"),
    ("<!-- table:shrink -->\nno end\n", "without its '<!-- /table -->'"),
    ("stray end\n<!-- /table -->\n", "without its '<!-- /table -->'"),
])
def test_bad_markers_are_one_line_errors(tmp_path, capsys, text, message):
    page = tmp_path / "page.md"
    page.write_text(text)
    assert tables.main(["--check", str(page)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_missing_result_file_is_named(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("<!-- table:shrink -->\n<!-- /table -->\n")
    assert tables.main(["--check", "--results", str(tmp_path), str(page)]) == 2
    assert "shrink.json" in capsys.readouterr().err


def test_cells_keep_pipes_inside():
    assert tables.markdown_table(["a"], [["x | y"]])[-1] == "| x \\| y |"


def test_stale_rows_of_issue_25_are_regenerated():
    # the rows the README still showed from an earlier run
    page = (REPO_ROOT / "docs" / "benchmarks" / "quantize.md").read_text()
    assert "96.06% (drop 1.16; per seed 0.74, 1.30, 0.93, 1.85, 0.93, 0.56, 1.85, 1.11)" in page
    assert "| accuracy | QAT ternary membrane only (fp32 weights) | 96.85% (drop 0.37, best epoch 7) |" in page


def test_a_marker_quoted_in_prose_is_not_a_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("A page holds `<!-- table:NAME -->` ... `<!-- /table -->`.\n")
    assert tables.check([page]) == []
    assert tables.used([page]) == {}
