"""The generated CLI reference (``docs/hooks/cli_reference.py``) lists every command of the app with every
option its ``--help`` shows, and its examples as runnable lines."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("docs_cli_reference",
                                                  REPO_ROOT / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cli_reference = _load()


@pytest.fixture(scope="module")
def page() -> str:
    return cli_reference.render_page()


@pytest.fixture(scope="module")
def sections(page) -> dict[str, str]:
    parts = re.split(r"^## (snncompress(?: \S+)?)\n", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_command_has_a_section(sections):
    root = cli_reference.root_command()
    names = [name for name, _, _ in cli_reference.subcommands(root)]
    assert {"quantize", "prune", "run", "report", "export", "demo"} <= set(names)
    assert list(sections) == ["snncompress"] + [f"snncompress {n}" for n in names]


def test_every_option_is_listed_under_its_command(sections):
    root = cli_reference.root_command()
    for name, command, ctx in cli_reference.subcommands(root):
        section = sections[f"snncompress {name}"]
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:  # hidden from --help too
                continue
            assert f"| {cli_reference.code(record[0])} |" in section, f"{name}: {record[0]}"
            for flag in [*param.opts, *param.secondary_opts] if param.param_type_name == "option" else []:
                assert flag in record[0]


def test_pass_config_flags_and_defaults_appear(sections):
    quantize = sections["snncompress quantize"]
    row = next(line for line in quantize.splitlines() if line.startswith("| `--weight-quant"))
    assert "(default: pot4)" in row
    assert "`--learn-threshold / --fixed-threshold`" in quantize
    assert "snncompress quantize [OPTIONS] {MODEL}" in quantize


def test_examples_are_one_command_per_line(sections):
    prune = sections["snncompress prune"]
    block = prune.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = block.strip().splitlines()
    assert lines and all(line.startswith("snncompress prune ") for line in lines)
    # --help wraps this one after '--schedule gradual'; the page joins it back
    assert any("--schedule gradual --epochs 6" in line for line in lines)


def test_help_text_is_escaped():
    assert cli_reference.escape("int<k> | a_b *c*") == "int&lt;k&gt; \\| a\\_b \\*c\\*"
    assert cli_reference.commands_of("snncompress a --x\n  --y 1\npython -m b") == \
        ["snncompress a --x --y 1", "python -m b"]
