"""``snncompress prune`` (issue 11): the generated command writes a pruned file, reports measured sparsity,
and rejects bad input with one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest

from snncompress.fileformat.compressed import read_metadata
from tests.cli.support import assert_input_error, cli

TINY = "tests.models:leaky_mlp"
DATA = "tests.models:static_dataset"


def test_prune_writes_masks_and_reports_measured_sparsity(capsys, tmp_path):
    out, report = tmp_path / "p.safetensors", tmp_path / "p.json"
    code, stdout, err = cli(capsys, "prune", TINY, "--data", DATA, "--train-data", DATA, "-o", out,
                            "--weights-unstructured", 0.5, "--epochs", 1, "--json", report, "-T", 3)
    assert code == 0, err
    header = read_metadata(out)
    assert {k for k, v in header["tensors"].items() if v.get("mask")} == {"0.weight", "2.weight"}
    (step,) = json.loads(report.read_text())["steps"]
    assert step["pass"] == "prune" and step["metrics"]["weight_sparsity"] == pytest.approx(0.5)
    assert "ops_skipped" in step["metrics"]
    assert "measured synaptic ops skipped" in stdout + err


def test_prune_appears_in_passes(capsys):
    code, out, _ = cli(capsys, "passes")
    assert code == 0 and "prune" in out


@pytest.mark.parametrize(("args", "match"), [
    (["--weights-unstructured", "1.0"], "--weights-unstructured: must be < 1"),
    (["--weights-structured", "-0.2"], "--weights-structured: must be >= 0"),
    (["--weights-nm", "4:4"], "N:M needs 0 < N < M"),
    (["--weights-unstructured", "0.5", "--weights-nm", "2:4"], "choose one"),
    (["--binary-membrane"], "ternary membrane"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(capsys, tmp_path, args, match):
    out = tmp_path / "bad.safetensors"
    assert_input_error(capsys, "prune", TINY, "--data", DATA, "--train-data", DATA, "-o", out, "--epochs", 0,
                       *args, match=match)
    assert not out.exists()


@pytest.mark.parametrize(("model", "args", "match"), [
    ("tests.models:tutorial_net", ["--spatial", "0.35"], "needs the layer inside an nn.Sequential"),
    ("tests.models:tutorial_net", ["--channel-threshold", "0.47"], "lif1"),
    ("tests.models:rleaky_mlp", ["--weights-structured", "0.5", "--shrink"], "all-to-all recurrent"),
])
def test_a_layer_the_pass_cannot_handle_is_one_line_before_anything_runs(capsys, tmp_path, model, args, match):
    """Found by the pass's check, before the pipeline measures or fine-tunes: no progress lines above it."""
    out = tmp_path / "bad.safetensors"
    assert_input_error(capsys, "prune", model, "--data", DATA, "--train-data", DATA, "-o", out, "--epochs", 1,
                       "-T", 3, *args, match=match)
    assert not out.exists()


def test_pooling_before_the_neuron_layer(capsys, tmp_path):
    """snnTorch tutorial 6's order, Conv2d -> MaxPool2d -> Leaky: masked; an overlapping pooling refused."""
    images = "tests.models:static_images"
    out = tmp_path / "p.safetensors"
    code, _, err = cli(capsys, "prune", "tests.models:pool_first_net", "--data", images, "--train-data", images,
                       "-o", out, "--spatial", 0.35, "--channel-threshold", 0.47, "--epochs", 0, "-T", 3, "-q")
    assert code == 0, err
    header = read_metadata(out)
    assert header["neurons"]["2"]["spatial"] == {"ratio": 0.35, "source": "0"}
    assert header["neurons"]["5"]["channel_gate"]["source"] == "3"
    bad = tmp_path / "bad.safetensors"
    assert_input_error(capsys, "prune", "tests.models:overlapping_pool_net", "--data", images, "--train-data",
                       images, "-o", bad, "--spatial", 0.35, "--epochs", 0, "-T", 3,
                       match="spatial pruning of '2': the pooling before it, MaxPool2d(kernel_size=3, stride=2")
    assert not bad.exists()
