"""The report document: schema, baseline ratios, warnings, and rendered files."""

from __future__ import annotations

import base64
import json

import jsonschema
import pytest
from hw_models import linear, linear_fp32, linear_fp32_nobias, linear_quant, model
from rich.console import Console

from snncompress.hardware import CostModelConfig, HardwareReport, build_report, report_json_schema
from snncompress.hardware.plots import memory_png
from snncompress.hardware.render import render_rich, write_html, write_markdown
from snncompress.hardware.report import SCHEMA_PATH


@pytest.fixture(scope="module")
def compared() -> HardwareReport:
    return build_report(linear_quant(), "45nm", baseline_desc=linear_fp32_nobias())


def test_schema_file_matches_model():
    assert json.loads(SCHEMA_PATH.read_text()) == report_json_schema(), (
        "report_schema.json is stale: run python -m snncompress.hardware.write_schema"
    )


def test_report_json_validates(compared):
    schema = json.loads(SCHEMA_PATH.read_text())
    doc = json.loads(compared.model_dump_json())
    jsonschema.validate(doc, schema)
    assert doc["schema_version"] == "1"
    jsonschema.validate(json.loads(build_report(linear_fp32(), "7nm").model_dump_json()), schema)


def test_schema_rejects_a_broken_report(compared):
    doc = json.loads(compared.model_dump_json())
    doc["schema_version"] = "2"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json.loads(SCHEMA_PATH.read_text()))


def test_json_round_trip(compared):
    assert HardwareReport.model_validate_json(compared.model_dump_json()) == compared


def test_baseline_ratios(compared):
    b = compared.baseline
    assert b is not None and b.name == "fp32"
    assert b.memory_bits == 547  # 384 weights + 64 params + 96 membrane + 3 spikes
    assert compared.totals.memory.total_bits == 97
    assert b.memory_reduction == pytest.approx(547 / 97)  # 5.64x
    assert b.synaptic_ops_reduction == pytest.approx(1.0)  # 15 ACs both: quantization removes no ops
    # baseline energy: fc1 15*0.9 + 480 bits*10/64 = 88.5; lif1 145.35 -> 233.85; quantized 36.21
    assert b.energy_pj == pytest.approx(233.85)
    assert b.energy_reduction == pytest.approx(233.85 / 36.21)
    assert b.accuracy_change == pytest.approx(-0.005)  # 0.915 - 0.92


def test_baseline_accuracy_missing():
    r = build_report(linear_quant(accuracy=None), "45nm", baseline_desc=linear_fp32_nobias())
    assert r.baseline.accuracy_change is None


def test_pruning_memory_warnings():
    ternary = dict(weight_bits=2, weight_scheme="ternary", nonzero_weights=10)
    r = build_report(model(linear(**ternary)), "45nm", config=CostModelConfig(sparse_format="csr"))
    assert (
        "layer fc1: pruning raised weight memory by 133% (csr index overhead: 56 bits vs 24 dense)"
        in r.warnings
    )
    r = build_report(model(linear(**ternary)), "45nm")
    assert (
        "layer fc1: pruned to 83% nonzero weights, but dense storage is smallest at 2 bits per weight; "
        "pruning saved no memory"
    ) in r.warnings


def test_no_spurious_warnings():
    assert build_report(linear_fp32(), "45nm").warnings == []


def test_conventions_mention_neurobench(compared):
    text = " ".join(compared.conventions)
    assert "NeuroBench Footprint" in text and "SynapticOperations" in text and "MembraneUpdates" in text
    assert "1.45" in text


def test_totals_effective_ops():
    r = build_report(
        model(linear(input_is_spikes=False, input_spikes_per_sample=None), linear(name="fc2")), "45nm"
    )
    assert r.totals.ops.effective_macs == 48  # first layer, real input, dense bound
    assert r.totals.ops.effective_acs == 15  # second layer, 5 spikes * 3


def test_render_rich(compared):
    console = Console(record=True, width=200, color_system=None)
    render_rich(compared, console)
    text = console.export_text()
    for needle in (
        "Memory (bits)",
        "Operations (counts over T = 4 steps)",
        "Energy (pJ; table 45nm, SRAM 8 KB)",
        "Against the baseline fp32",
        "5.64x",
        "-0.50 pp",
        "warning: energy for int2 add scaled",
    ):
        assert needle in text


def test_write_markdown(compared, tmp_path):
    written = write_markdown(compared, tmp_path / "report.md")
    names = sorted(p.name for p in written)
    assert names == [
        "report.md",
        "report_baseline.png",
        "report_energy.png",
        "report_memory.png",
        "report_ops.png",
    ]
    md = (tmp_path / "report.md").read_text()
    assert "![memory](report_memory.png)" in md and "| **total** |" in md
    assert (tmp_path / "report_memory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_write_html_self_contained(compared, tmp_path):
    path = write_html(compared, tmp_path / "report.html")
    page = path.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert 'src="report_' not in page  # nothing loaded from beside it
    start = page.index("data:image/png;base64,") + len("data:image/png;base64,")
    assert base64.b64decode(page[start : page.index('"', start)])[:4] == b"\x89PNG"


def test_plots_deterministic(compared):
    assert memory_png(compared) == memory_png(compared)
