"""The sparsity sweep (issue 11): each layer's format follows the cost model's choice, and the index shows."""

from __future__ import annotations

import json

import pytest

from snncompress.costing.describe import describe_model
from snncompress.fileformat.loading import load_model
from snncompress.hardware.sweep import break_even, sparsity_sweep
from tests.cli.support import assert_input_error, cli
from tests.models import TINY_MODELS
from tests.sim.test_constraints import bundle


@pytest.fixture(scope="module")
def points():
    model = load_model(TINY_MODELS["leaky_mlp"].ref)
    return sparsity_sweep(describe_model(model, bundle("leaky_mlp")), sparsities=(0.0, 0.1, 0.3, 0.9))


def test_formats_follow_the_storage_cost(points):
    by = {(p.scheme, p.sparsity): p for p in points}
    assert all(f == "dense" for f in by["fp32", 0.0].formats.values()) and by["fp32", 0.0].index_bits == 0
    # fp32: a bitmap (1 bit per weight) pays at once; 4 bits: not at 10 % (0.9 * 4 + 1 > 4), at 30 % (0.7 * 4 + 1 < 4)
    assert set(by["fp32", 0.1].formats.values()) == {"bitmap"}
    assert set(by["int4", 0.1].formats.values()) == {"dense"} and by["int4", 0.1].index_bits == 0
    assert set(by["int4", 0.3].formats.values()) == {"bitmap"}
    weights = 8 * 12 + 12 * 4
    assert by["int4", 0.3].index_bits == weights  # one bitmap bit per weight
    assert by["fp32", 0.9].memory_bits < by["fp32", 0.3].memory_bits < by["fp32", 0.0].memory_bits
    assert by["int4", 0.9].synaptic_ops == pytest.approx(0.1 * by["int4", 0.0].synaptic_ops)
    assert break_even(points, "fp32") == 0.1 and break_even(points, "int4") == 0.3


def test_report_sparsity_sweep_cli(capsys, tmp_path):
    out = tmp_path / "sweep.json"
    code, stdout, err = cli(capsys, "report", TINY_MODELS["leaky_mlp"].ref, "--data", "tests.models:static_dataset",
                            "-T", 3, "--sparsity-sweep", "--json", out)
    assert code == 0, err
    assert "memory below dense from" in stdout
    payload = json.loads(out.read_text())
    assert {p["scheme"] for p in payload["points"]} == {"fp32", "int4"} and len(payload["points"]) == 24
    assert_input_error(capsys, "report", TINY_MODELS["leaky_mlp"].ref, "--sparsity-sweep", match="pass --data")
