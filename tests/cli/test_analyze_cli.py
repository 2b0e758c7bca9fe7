"""``snncompress analyze``: the tables, the recommendation, --json, --plot (same bytes twice), bad input."""

from __future__ import annotations

import json

import pytest

from tests.cli.support import assert_input_error, cli

TINY = "tests.models:leaky_mlp"
SEQUENCE_MODEL = "tests.models:tutorial_net"
DATA = "tests.models:static_dataset"  # 10 static [8] samples, labels 0..3
FAST = ["--data", DATA, "-T", "3", "--clip-range", "-2:-1:0.5", "-q"]


@pytest.mark.parametrize("model", [TINY, SEQUENCE_MODEL])
def test_tables_and_recommendation_on_stdout(capsys, model):
    code, out, err = cli(capsys, "analyze", model, *FAST, "--tolerance", "100")
    assert code == 0, err
    assert "U_min (x Vth)" in out and "accuracy with the stored membrane clipped at c" in out
    assert "Gamma_u %" in out and "r_s %" in out
    assert "recommended clip -1 x Vth" in out  # within 100 points: the most aggressive boundary
    assert err == ""  # -q: no progress, no notes


def test_json_to_stdout_holds_everything_and_nothing_else(capsys):
    code, out, err = cli(capsys, "analyze", TINY, *FAST, "--membrane-quant", "ternary", "--json", "-")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["boundaries"] == [-2.0, -1.5, -1.0]
    assert [p["eligible"] for p in payload["sweep"]] == [False, False, True]  # ternary takes only -1
    assert {layer["name"] for layer in payload["layers"]} == {"1", "3"}
    layer = payload["layers"][0]
    assert len(layer["gamma_u"]) == len(layer["r_s"]) == 3 and sum(layer["histogram"]["counts"]) > 0
    assert payload["config"]["membrane_quant"] == "ternary"
    assert payload["recommended"] in (None, -1.0)


def test_plot_is_a_png_with_the_same_bytes_twice(capsys, tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for path in (first, second):
        code, _, err = cli(capsys, "analyze", TINY, *FAST, "--plot", path)
        assert code == 0, err
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()


def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path):
    plot, report = tmp_path / "clip.png", tmp_path / "clip.json"
    common = [TINY, "--data", DATA, "-q", "--plot", plot, "--json", report]
    assert_input_error(capsys, "analyze", *common, "--clip-range", "1:2:0.5", match="--clip-range: clip range")
    assert_input_error(capsys, "analyze", *common, "--clip-range", "-5:-1", match="expected START:STOP:STEP")
    assert_input_error(capsys, "analyze", *common, "--tolerance", "-1", match="--tolerance: must be >= 0")
    assert_input_error(capsys, "analyze", *common, "--membrane-quant", "ternary", "--clip-range", "-3:-2:0.5",
                       match="fits ternary at 1 level per Vth: ternary takes only -1")
    assert_input_error(capsys, "analyze", *common, "--membrane-quant", "int9x", match="--membrane-quant")
    assert_input_error(capsys, "analyze", TINY, "--data", DATA, "--plot", tmp_path / "clip.jpg",
                       match="the figure is a PNG")
    assert not plot.exists() and not report.exists()
    plot.write_bytes(b"old")
    assert_input_error(capsys, "analyze", TINY, "--data", DATA, "--plot", plot, match="exists; pass --force")
    assert plot.read_bytes() == b"old"


def test_analyze_takes_trust_code_for_a_file_that_names_its_factory(capsys, tmp_path):
    from tests.cli.support import assert_input_error, cli

    q = tmp_path / "q.safetensors"
    code, _, err = cli(capsys, "quantize", "tests.models:tutorial_net", "--data", "tests.models:static_dataset",
                       "-T", "3", "-o", q, "--membrane-quant", "fp32", "--weight-quant", "int8",
                       "--calibration", "none")
    assert code == 0, err
    line = assert_input_error(capsys, "analyze", q, "--data", "tests.models:static_dataset", "-T", "3",
                              match="tests.models:tutorial_net")
    assert "--trust-code" in line
    code, out, err = cli(capsys, "analyze", q, "--trust-code", "--data", "tests.models:static_dataset", "-T", "3",
                         "--clip-range", "-2:-1:1", "--json", "-")
    assert code == 0, err
