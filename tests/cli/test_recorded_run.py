"""A compressed file remembers how it was run (issue 16, item 2): ``evaluate``, ``report`` and ``export``
of the file without ``--time-steps`` / ``--encoding`` use the recorded T, encoding and input shape and say
so; an explicit different value is used with a note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snncompress.fileformat.compressed import read_metadata
from snncompress.fileformat.loading import load_model
from snncompress.state import get_state, recorded_run
from tests.cli.support import cli

FUNCTION_DATA = "tests.models:static_dataset"  # 10 static [8] samples
NO_CALIBRATION = ["--calibration", "none"]


@pytest.fixture
def data_file(tmp_path, write_tensors) -> Path:
    import torch

    gen = torch.Generator().manual_seed(3)
    return write_tensors("static.safetensors", x=torch.rand(10, 8, generator=gen), y=torch.arange(10) % 4)


@pytest.fixture
def rate_coded(capsys, tmp_path, data_file) -> tuple[Path, dict, Path]:
    """tests.models:leaky_mlp quantized at T = 3 on Poisson-coded inputs: the file, the run's JSON, the data."""
    out, report = tmp_path / "q.safetensors", tmp_path / "q.json"
    code, _, err = cli(capsys, "quantize", "tests.models:leaky_mlp", "--data", data_file, "-T", 3, "--encoding", "rate",
                       "--seed", 5, "-o", out, "--json", report, "--weight-quant", "int4", "--membrane-quant", "int4",
                       *NO_CALIBRATION)
    assert code == 0, err
    return out, json.loads(report.read_text()), data_file


def test_the_file_records_t_encoding_and_sample_shape(rate_coded):
    out, _, data = rate_coded
    assert read_metadata(out)["baseline"]["run"] == {"time_steps": 3, "encoding": "rate", "sample_shape": [3, 8],
                                                     "is_sequence": True, "seed": 5}
    assert recorded_run(load_model(str(out))) == read_metadata(out)["baseline"]["run"]


def test_evaluate_without_flags_uses_the_record_and_reproduces_quantize(capsys, rate_coded):
    out, report, data = rate_coded
    code, stdout, err = cli(capsys, "evaluate", out, "--data", data, "--json", "-")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["time_steps"] == 3 and result["accuracy"] == report["after"]["accuracy"]
    assert "records how it was run; using --time-steps 3, --encoding rate" in err
    assert "using --seed 5 recorded in" in err  # the same Poisson draws
    assert "as asked" not in err


def test_an_explicit_different_t_is_used_with_a_note(capsys, rate_coded):
    out, _, data = rate_coded
    code, stdout, err = cli(capsys, "evaluate", out, "--data", data, "-T", 2, "--encoding", "direct", "--json", "-")
    assert code == 0, err
    assert json.loads(stdout)["time_steps"] == 2
    assert "with --time-steps 2 (compressed with 3), --encoding direct (compressed with rate) as asked" in err
    assert "records how it was run" not in err
    # the same values as recorded: no note at all
    code, _, err = cli(capsys, "evaluate", out, "--data", data, "-T", 3, "--encoding", "rate", "--seed", 5,
                       "--json", "-")
    assert code == 0 and "note" not in err


def test_report_with_data_uses_the_record(capsys, rate_coded):
    out, _, data = rate_coded
    code, _, err = cli(capsys, "report", out, "--data", data)
    assert code == 0, err
    assert "using --time-steps 3, --encoding rate" in err


def test_export_uses_the_recorded_t_and_input_shape(capsys, rate_coded, tmp_path):
    out, _, data = rate_coded
    onnx = tmp_path / "q.onnx"
    code, stdout, err = cli(capsys, "export", out, "-o", onnx, "--json", "-")
    assert code == 0, err
    assert json.loads(stdout)["input_shape"] == [8]
    assert "using --time-steps 3" in err and "--encoding" not in err
    assert "input shape [8] per step, from the model" in err


def test_a_file_of_other_data_gets_a_shape_note(capsys, rate_coded, write_tensors):
    import torch

    out, _, data = rate_coded
    frames = write_tensors("frames.safetensors", x=(torch.rand(4, 2, 8) < 0.5).float(), y=torch.arange(4))
    code, _, err = cli(capsys, "evaluate", out, "--data", frames, "--encoding", "direct", "--json", "-")
    assert code == 0, err
    assert "has samples of shape [2, 8]; " in err and "compressed on samples of shape [3, 8]" in err


def test_a_model_without_a_record_keeps_the_old_defaults(capsys):
    code, stdout, err = cli(capsys, "evaluate", "tests.models:leaky_mlp", "--data", FUNCTION_DATA, "--json", "-")
    assert code == 0 and json.loads(stdout)["time_steps"] == 8 and "note" not in err


def test_older_files_give_the_t_of_their_baseline(rate_coded):
    model = load_model(str(rate_coded[0]))
    baseline = get_state(model).baseline
    del baseline["run"]
    baseline["time_steps"] = 6
    assert recorded_run(model) == {"time_steps": 6}


def test_a_source_presented_as_it_comes_is_recorded_as_direct(capsys, tmp_path):
    # a package.module:function data set is not rate coded: the record must not claim it was
    out = tmp_path / "f.safetensors"
    code, _, err = cli(capsys, "quantize", "tests.models:leaky_mlp", "--data", FUNCTION_DATA, "-T", 2,
                       "--encoding", "rate", "-o", out, "--weight-quant", "int8", "--membrane-quant", "fp32",
                       *NO_CALIBRATION)
    assert code == 0, err
    assert read_metadata(out)["baseline"]["run"]["encoding"] == "direct"
