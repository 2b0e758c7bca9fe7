"""``snncompress report``: the terminal report, the JSON/HTML/Markdown files, the baseline, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from rich.console import Console

from snncompress.cli import common
from snncompress.costing.report import record_baseline
from snncompress.data import DataOptions, load_data
from snncompress.fileformat.compressed import save_compressed
from snncompress.hardware.energy_table import TABLES_DIR
from snncompress.hardware.report import SCHEMA_PATH
from snncompress.state import get_state
from tests.cli.support import assert_input_error, cli
from tests.models import leaky_mlp

MODEL = "tests.models:leaky_mlp"
DATA = ["--data", "tests.models:static_dataset", "-T", "3"]






@pytest.fixture
def console_width(monkeypatch):
    """Results go to ``common.console``; give it a fixed width (pytest's stdout is not a terminal)."""

    def set_width(width: int) -> None:
        monkeypatch.setattr(common, "console", Console(width=width, color_system=None))

    set_width(100)
    return set_width


@pytest.fixture
def compressed(tmp_path) -> Path:
    """leaky_mlp with its fp32 baseline recorded, then pot4 weights and a ternary membrane, saved."""
    pytest.importorskip("snncompress.quant.membrane", reason="snncompress.quant is not importable yet")
    from snncompress.models.membrane import install_membrane_quantizer
    from snncompress.quant import parse_membrane_quant, parse_weight_scheme

    model = leaky_mlp()
    get_state(model).source = {"kind": "factory", "factory": MODEL}
    # a data file, not a function: a data set a file records is read, a function it records never runs
    from safetensors.torch import save_file

    from tests.models import _static_tensors

    x, y = _static_tensors()
    save_file({"x": x.contiguous(), "y": y.contiguous()}, str(tmp_path / "static.safetensors"))
    data = load_data(str(tmp_path / "static.safetensors"), DataOptions(time_steps=3))
    record_baseline(model, data, spec="leaky_mlp fp32")
    scheme = parse_weight_scheme("pot4")
    for name in ("0", "2"):
        layer = model.get_submodule(name)
        enc = scheme.encode(layer.weight)
        with torch.no_grad():
            layer.weight.copy_(scheme.decode(enc))
        get_state(model).tensors[f"{name}.weight"] = enc
    install_membrane_quantizer(model, "1", parse_membrane_quant("ternary"))
    return save_compressed(model, tmp_path / "quant.safetensors")


# -- the report ---------------------------------------------------------------------------------------


def test_report_prints_the_tables(capsys, console_width):
    code, out, err = cli(capsys, "report", MODEL, *DATA)
    assert code == 0, err
    for needle in (
        "Hardware report: tests.models:leaky_mlp",
        "Memory (bits)",
        "Operations (counts over T = 3",
        "Energy (pJ; table 45nm, SRAM 8 KB)",
        "data tests.models:static_dataset",
    ):
        assert needle in out
    assert "Against the baseline" not in out  # a factory model has no recorded baseline


@pytest.fixture(scope="module")
def demo_report():
    """The demo model's report (the widest tables: 8 layers, 6-digit counts) on 16 random 8x8 images
    (the figures' widths do not depend on the data, and scikit-learn's digits take seconds to import)."""
    from torch.utils.data import TensorDataset

    from snncompress.costing.report import ReportInputs, make_report
    from snncompress.data.loading import DataBundle
    from snncompress.fileformat.loading import load_model

    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    data = DataBundle(
        "random", TensorDataset(x, torch.arange(16) % 10), False, 8, 10, DataOptions(time_steps=8)
    )
    return make_report(ReportInputs(load_model("demo"), "demo", data))


def _rendered(report, width: int) -> str:
    from snncompress.hardware.render import render_rich

    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    render_rich(report, console)
    console.file.close()
    return console.export_text()


@pytest.mark.parametrize("width", [100, 120])
def test_demo_report_is_readable_at_100_and_120_columns(demo_report, width):
    out = _rendered(demo_report, width)
    assert "…" not in out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= width
    assert "(continued)" not in out  # every table fits whole
    assert "Energy (nJ; table 45nm, SRAM 1 MB)" in out and "Memory (B)" in out


def test_narrow_terminal_splits_tables_instead_of_cutting_numbers(demo_report):
    out = _rendered(demo_report, 60)
    assert "…" not in out and "Memory (B) (continued)" in out
    assert "409,600" in out  # the widest figure of the ops table, whole


def test_json_validates_and_files_are_written(capsys, console_width, tmp_path):
    json_path, md = tmp_path / "r.json", tmp_path / "md" / "r.md"
    md.parent.mkdir()
    code, _, err = cli(capsys, "report", MODEL, *DATA, "--json", json_path, "--markdown", md)
    assert code == 0, err
    doc = json.loads(json_path.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))
    assert doc["schema_version"] == "1" and doc["model"] == MODEL and doc["baseline"] is None
    assert doc["source"]["data"] == "tests.models:static_dataset"
    assert sorted(p.name for p in md.parent.iterdir()) == [
        "r.md",
        "r_energy.png",
        "r_memory.png",
        "r_ops.png",
    ]
    assert f"wrote {json_path}" in err


def test_energy_table_from_a_users_yaml(capsys, console_width, tmp_path):
    text = (TABLES_DIR / "45nm.yaml").read_text().replace("name: 45nm", "name: mychip")
    (tmp_path / "chip.yaml").write_text(text.replace("fp32: 0.9", "fp32: 1.8"))
    code, _, err = cli(
        capsys, "report", MODEL, *DATA, "--energy", tmp_path / "chip.yaml", "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["energy_table"]["name"] == "mychip"
    adds = [t for layer in doc["layers"] for t in layer["ops"]["tallies"] if t["op"] == "add"]
    assert {t["energy_pj_per_op"] for t in adds if t["family"] == "fp" and t["bits"] == 32} == {1.8}


# -- against the baseline -----------------------------------------------------------------------------


def test_compressed_file_reports_against_its_recorded_baseline(capsys, console_width, compressed, tmp_path):
    code, out, err = cli(capsys, "report", compressed, *DATA, "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "Against the baseline leaky_mlp fp32" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    b = doc["baseline"]
    assert b["name"] == "leaky_mlp fp32"
    # (8*12 + 12*4) weights: 32 -> 4 bits; membranes of layer 1: 32 -> 2 bits
    assert b["memory_reduction"] > 3
    assert b["energy_reduction"] > 1
    assert doc["accuracy"] is not None and b["accuracy_change"] == pytest.approx(
        doc["accuracy"] - b["accuracy"]
    )


def test_compressed_file_without_data_uses_its_recorded_data_set(capsys, console_width, compressed, tmp_path):
    code, out, err = cli(capsys, "report", compressed, "--json", tmp_path / "r.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["time_steps"] == 3 and doc["accuracy"] is None
    assert doc["totals"]["ops"]["dense_bound_layers"] == ["0", "2"]
    # both sides at the dense bound: quantization removes no op
    assert doc["baseline"]["synaptic_ops_reduction"] == pytest.approx(1.0)
    assert "dense upper bound" in out


def test_baseline_option_replaces_the_recorded_one(capsys, console_width, compressed, tmp_path):
    code, out, err = cli(
        capsys, "report", compressed, *DATA, "--baseline", MODEL, "--json", tmp_path / "r.json"
    )
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["baseline"]["name"] == MODEL


# -- bad input: exit 2, one line ----------------------------------------------------------------------


def test_unknown_energy_table(capsys):
    assert_input_error(
        capsys,
        "report",
        MODEL,
        *DATA,
        "--energy",
        "5nm",
        match="unknown energy table '5nm': did you mean '45nm'?",
    )


def test_broken_energy_yaml(capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text("operations: [1, 2\n")
    assert_input_error(
        capsys, "report", MODEL, *DATA, "--energy", tmp_path / "bad.yaml", match="not valid YAML: line"
    )


def test_energy_yaml_with_a_bad_value(capsys, tmp_path):
    text = (TABLES_DIR / "45nm.yaml").read_text().replace("int8: 0.03", "int8: -0.03")
    (tmp_path / "neg.yaml").write_text(text)
    assert_input_error(
        capsys,
        "report",
        MODEL,
        *DATA,
        "--energy",
        tmp_path / "neg.yaml",
        match="operations.add.int8: Input should be greater than 0",
    )


def test_output_exists_without_force(capsys, console_width, tmp_path):
    (tmp_path / "r.json").write_text("{}")
    assert_input_error(
        capsys,
        "report",
        MODEL,
        *DATA,
        "--json",
        tmp_path / "r.json",
        "--markdown",
        tmp_path / "r.md",
        match="r.json exists; pass --force",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # nothing else written
    code, _, err = cli(capsys, "report", MODEL, *DATA, "--json", tmp_path / "r.json", "--force")
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["schema_version"] == "1"


def test_a_markdown_plot_that_exists_is_not_overwritten(capsys, tmp_path):
    (tmp_path / "r_ops.png").write_bytes(b"keep")
    assert_input_error(
        capsys,
        "report",
        MODEL,
        *DATA,
        "--markdown",
        tmp_path / "r.md",
        match="r_ops.png exists; pass --force",
    )
    assert (tmp_path / "r_ops.png").read_bytes() == b"keep"


def test_output_folder_missing(capsys, tmp_path):
    assert_input_error(
        capsys, "report", MODEL, *DATA, "--html", tmp_path / "no" / "r.html", match="does not exist"
    )


def test_no_data_and_no_recorded_data_set(capsys):
    assert_input_error(capsys, "report", MODEL, match="has no recorded data set: pass --data")


def test_help_shows_an_example(capsys):
    code, out, _ = cli(capsys, "report", "--help")
    assert code == 0 and "snncompress report demo --data digits" in out
