"""``snncompress export``: formats, input shapes, --force, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch

from snncompress.cli.app import main
from snncompress.fileformat.compressed import save_compressed
from snncompress.fileformat.loading import load_model
from tests.export.export_nets import ROUND_TRIP, batchnorm_net, inputs, leaky_linear, run


def _exit_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code


def test_help_has_a_worked_example(capsys):
    assert _exit_code(["export", "-h"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and "--input-shape" in out


def test_demo_to_nir_and_back(tmp_path, capsys):
    out = tmp_path / "demo.nir"
    assert _exit_code(["export", "demo", "--format", "nir", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "note:" in captured.err
    x = inputs((1, 8, 8))
    assert torch.equal(run(load_model(str(out)), x).spikes, run(load_model("demo"), x).spikes)


def test_nir_file_to_onnx_takes_the_input_shape_from_the_graph(tmp_path, capsys):
    nir_path = tmp_path / "m.nir"
    assert _exit_code(["export", "demo", "-o", str(nir_path)]) == 0  # format from the suffix
    capsys.readouterr()
    onnx_path = tmp_path / "m.onnx"
    assert _exit_code(["export", str(nir_path), "-o", str(onnx_path), "--time-steps", "2", "--json", "-"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["format"] == "onnx" and payload["input_shape"] == [1, 8, 8] and onnx_path.exists()
    assert payload["states"][0]["input"] == "mem_1"


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_text("old")
    assert _exit_code(["export", "demo", "-o", str(out), "-T", "2"]) == 2
    err = capsys.readouterr().err
    assert "--force" in err and err.count("\n") == 1
    assert out.read_text() == "old"
    assert _exit_code(["export", "demo", "-o", str(out), "-T", "2", "--force"]) == 0
    assert out.stat().st_size > 1000


def test_input_shape_and_data_options(tmp_path, capsys):
    model_path = save_compressed(ROUND_TRIP["conv1d_leaky"][0](), tmp_path / "c1.safetensors")
    assert _exit_code(["export", str(model_path), "-o", str(tmp_path / "a.nir")]) == 2  # shape unknown
    assert "--input-shape" in capsys.readouterr().err
    assert _exit_code(["export", str(model_path), "-o", str(tmp_path / "a.nir"), "--input-shape", "2x10"]) \
        == 0
    linear_path = save_compressed(leaky_linear(), tmp_path / "lin.safetensors")
    # the shape comes from the first Linear
    assert _exit_code(["export", str(linear_path), "-o", str(tmp_path / "b.nir")]) == 0
    assert _exit_code(["export", "demo", "-o", str(tmp_path / "c.nir"), "--data", "digits", "-T", "2"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--input-shape", "a,b"], "--input-shape"),
    (["--input-shape", "1,8,8", "--data", "digits"], "pass one of them"),
    (["--format", "tflite"], "use onnx or nir"),
    (["--input-shape", "1,5,5"], "does not fit"),
    (["--time-steps", "0"], "--time-steps"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    assert _exit_code(["export", "demo", "-o", str(tmp_path / "x.nir"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.nir").exists()


def test_unknown_suffix_without_format(tmp_path, capsys):
    assert _exit_code(["export", "demo", "-o", str(tmp_path / "x.bin")]) == 2
    assert "--format" in capsys.readouterr().err


def test_unsupported_layer_names_it(tmp_path, capsys):
    model_path = save_compressed(batchnorm_net(), tmp_path / "bn.safetensors")
    shape = ["--input-shape", "1,5,5"]
    assert _exit_code(["export", str(model_path), "-o", str(tmp_path / "bn.nir"), *shape]) == 2
    err = capsys.readouterr().err
    assert "'1' (BatchNorm2d)" in err and err.count("\n") == 1
    assert _exit_code(["export", str(model_path), "-o", str(tmp_path / "bn.onnx"), *shape]) == 0


def test_broken_nir_model_is_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"\x89HDF garbage")
    assert _exit_code(["export", str(bad), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "bad.nir" in capsys.readouterr().err


def test_onnx_unroll_flag(tmp_path, capsys):
    out = tmp_path / "demo_unrolled.onnx"
    assert _exit_code(["export", "demo", "--format", "onnx", "--unroll", "-T", "2", "-o", str(out), "--json", "-"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["unrolled"] is True and payload["outputs"] == ["spikes"] and out.exists()
    assert _exit_code(["export", "demo", "--format", "nir", "--unroll", "-o", str(tmp_path / "d.nir")]) == 2
    assert "--unroll applies to ONNX export" in capsys.readouterr().err
