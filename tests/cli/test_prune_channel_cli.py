"""``snncompress prune --channel-threshold`` (issue 11, SpQuant Eq. 23): writes the gate into the file and reports
its work; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest

from snncompress.fileformat.compressed import read_metadata
from tests.cli.support import assert_input_error, cli

TINY = "tests.models:leaky_mlp"
DATA = "tests.models:static_dataset"


def test_prune_with_channel_masking_writes_the_gate(capsys, tmp_path):
    out, report = tmp_path / "c.safetensors", tmp_path / "c.json"
    code, stdout, err = cli(capsys, "prune", TINY, "--data", DATA, "--train-data", DATA, "-o", out, "--spatial",
                            0.35, "--channel-threshold", 0.47, "--epochs", 1, "--json", report, "-T", 3)
    assert code == 0, err
    header = read_metadata(out)
    assert header["neurons"]["1"]["channel_gate"]["source"] == "0"
    assert "1.channel_gate.bias" in header["tensors"]
    (step,) = json.loads(report.read_text())["steps"]
    assert step["metrics"]["gate_ops"] > 0 and "ops_reduction_with_overhead" in step["metrics"]
    assert "channel masking: channel-steps dropped" in stdout + err


@pytest.mark.parametrize(("args", "match"), [
    (["--channel-threshold", "1.0"], "--channel-threshold: must be < 1"),
    (["--channel-threshold", "0"], "--channel-threshold: must be > 0"),
    (["--channel-threshold", "0.47", "--channel-cost", "-1"], "--channel-cost: must be >= 0"),
])
def test_bad_channel_input_is_one_line_exit_2_nothing_written(capsys, tmp_path, args, match):
    out = tmp_path / "bad.safetensors"
    assert_input_error(capsys, "prune", TINY, "--data", DATA, "--train-data", DATA, "-o", out, "--epochs", 0,
                       *args, match=match)
    assert not out.exists()


def test_channel_masking_a_layer_without_a_feeding_synaptic_layer(capsys, tmp_path):
    out = tmp_path / "bad.safetensors"
    # tutorial_net is not a Sequential: which synaptic layer feeds a neuron is not known
    assert_input_error(capsys, "prune", "tests.models:tutorial_net", "--data", DATA,
                       "-o", out, "--epochs", 0, "--channel-threshold", "0.47", "-q", match="channel masking of")
    assert not out.exists()
