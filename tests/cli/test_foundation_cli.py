"""The foundation commands (``inspect``, ``evaluate``, ``demo``) and how the CLI reports bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from snncompress import __version__
from snncompress.cli.app import main
from snncompress.data import DataOptions, load_data
from snncompress.errors import ModelLoadError
from snncompress.fileformat.compressed import read_metadata, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.sim.evaluate import evaluate
from snncompress.sim.runner import SNNRunner
from tests.cli.support import assert_input_error, cli
from tests.models import T, leaky_mlp, picklable


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- bad input: exit code 2, one line, no traceback, no output file ------------------------------------

@pytest.fixture
def compressed(tmp_path) -> Path:
    return save_compressed(leaky_mlp(), tmp_path / "model.safetensors")


def test_missing_model_path(capsys, tmp_path):
    assert_input_error(capsys, "inspect", tmp_path / "absent.safetensors", match="model file not found")
    assert_input_error(capsys, "evaluate", "absent_model", match="model not found: 'absent_model'")


def test_unknown_model_file_type(capsys, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x01")
    assert_input_error(capsys, "inspect", tmp_path / "model.onnx", match="unknown model file type '.onnx'")


def test_truncated_and_corrupted_safetensors(capsys, tmp_path, compressed):
    data = compressed.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 10])
    assert_input_error(capsys, "inspect", tmp_path / "cut.safetensors", match="truncated or corrupted")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    assert_input_error(capsys, "evaluate", tmp_path / "junk.safetensors", "--data", "digits",
                       match="not a readable safetensors file")


def test_state_dict_that_does_not_fit_the_factory(capsys, saved_weights):
    sd = leaky_mlp().state_dict()
    sd.pop("0.bias")
    sd["2.weight"] = torch.zeros(4, 10)
    path = saved_weights(sd, "bad.pt")
    line = assert_input_error(capsys, "inspect", "tests.models:leaky_mlp", "--weights", path,
                              match="does not fit the model")
    assert "missing keys: 0.bias" in line and "2.weight [4, 10] vs model [4, 12]" in line


def test_nan_or_inf_in_weights(capsys, saved_weights):
    sd = leaky_mlp().state_dict()
    sd["0.bias"][3] = float("inf")
    assert_input_error(capsys, "evaluate", "tests.models:leaky_mlp", "--weights", saved_weights(sd),
                       match="'0.bias' contains NaN or Inf")


def test_pickle_needs_trust_pickle(capsys, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(picklable(leaky_mlp()), path)
    assert_input_error(capsys, "inspect", path, match="pass --trust-pickle")
    code, out, _ = cli(capsys, "inspect", path, "--trust-pickle", "--json", "-")
    assert code == 0 and json.loads(out)["total_parameters"] == 8 * 12 + 12 + 12 * 4 + 4


def test_unsupported_layer(capsys):
    assert_input_error(capsys, "inspect", "tests.models:lstm_net", match="layer '2' (LSTM) is not supported")
    assert_input_error(capsys, "inspect", "tests.models:leaky_parallel_net",
                       match="layer '1' is a LeakyParallel neuron")


def test_data_that_does_not_fit_the_model(capsys, write_tensors):
    assert_input_error(capsys, "evaluate", "tests.models:leaky_mlp", "--data", "digits", "--limit", "4",
                       match="data samples of shape [1, 8, 8] do not fit the model")
    labels = write_tensors("labels.safetensors", x=torch.rand(6, 8), y=torch.tensor([0, 1, 2, 3, 9, 1]))
    assert_input_error(capsys, "evaluate", "tests.models:leaky_mlp", "--data", labels,
                       match="labels up to 9 but the model has 4 outputs")


def test_bad_data_sources(capsys, tmp_path, write_tensors):
    assert_input_error(capsys, "evaluate", "demo", "--data", tmp_path / "absent.npz",
                       match="data file not found")
    assert_input_error(capsys, "evaluate", "demo", "--data", "imagenet",
                       match="unknown data source 'imagenet'")
    no_x = write_tensors("no_x.npz", y=torch.zeros(3, dtype=torch.long))
    assert_input_error(capsys, "evaluate", "demo", "--data", no_x, match="expected tensor 'x' (and 'y' for labels)")
    assert_input_error(capsys, "evaluate", "demo", "--limit", "0", match="--limit must be >= 1")


def test_demo_refuses_to_overwrite_without_force(capsys, tmp_path):
    target = tmp_path / "x.safetensors"
    target.write_bytes(b"mine")
    assert_input_error(capsys, "demo", "-o", target, match="exists; pass --force to overwrite it")
    assert target.read_bytes() == b"mine" and _files(tmp_path) == ["x.safetensors"]
    assert_input_error(capsys, "demo", "-o", tmp_path / "no" / "x.safetensors", match="does not exist")
    (tmp_path / "summary.json").write_text("{}")
    assert_input_error(capsys, "demo", "-o", tmp_path / "new.safetensors", "--json",
                       tmp_path / "summary.json", match="summary.json exists; pass --force")
    assert _files(tmp_path) == ["summary.json", "x.safetensors"]
    assert (tmp_path / "summary.json").read_text() == "{}"


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found"):
        main(["--debug", "inspect", str(tmp_path / "absent.safetensors")])


def test_usage_errors_exit_2(capsys):
    code, _, err = cli(capsys, "evaluate")
    assert code == 2 and "Missing argument 'MODEL'" in err and "Traceback" not in err
    code, _, err = cli(capsys, "inspect", "demo", "--no-such-option")
    assert code == 2 and "No such option" in err
    (line,) = err.strip().splitlines()  # one line, naming where to look
    assert line.startswith("error: No such option: --no-such-option") and "'snncompress inspect --help'" in line


# -- results -------------------------------------------------------------------------------------------------

def test_inspect_json(capsys):
    code, out, _ = cli(capsys, "inspect", "tests.models:conv2d_net", "--json", "-")
    assert code == 0
    summary = json.loads(out)
    assert summary["style"] == "stepwise" and summary["neuron_layers"] == 3
    assert summary["source"] == {"kind": "factory", "factory": "tests.models:conv2d_net"}
    types = [layer["type"] for layer in summary["layers"]]
    assert types[:4] == ["Conv2d", "BatchNorm2d", "Leaky", "MaxPool2d"]
    assert summary["total_parameters"] == 40 + 8 + 148 + 68
    assert all(layer["output_shape"] is None for layer in summary["layers"])


def test_inspect_with_data_shows_output_shapes(capsys, write_tensors):
    frames = write_tensors("frames.pt", x=(torch.rand(3, 5, 8) > 0.5).float(), y=torch.tensor([0, 1, 2]))
    code, out, _ = cli(capsys, "inspect", "tests.models:leaky_mlp", "--data", frames, "--json", "-")
    assert code == 0
    shapes = {layer["name"]: layer["output_shape"] for layer in json.loads(out)["layers"]}
    assert shapes == {"0": [12], "1": [12], "2": [4], "3": [4]}


def test_inspect_table_names_layers_and_history(capsys, tmp_path):
    model = leaky_mlp()
    from snncompress.state import get_state

    get_state(model).history.append({"pass": "quantize"})
    path = save_compressed(model, tmp_path / "m.safetensors")
    code, out, _ = cli(capsys, "inspect", path)
    assert code == 0
    assert "Leaky" in out and "Linear" in out and "total parameters: 160" in out
    assert "pass history: quantize" in out


def test_evaluate_json_matches_the_library(capsys):
    code, out, _ = cli(capsys, "evaluate", "tests.models:tutorial_net", "--data",
                       "tests.models:static_loader", "--time-steps", str(T), "--limit", "7",
                       "--batch-size", "3", "--json", "-")
    assert code == 0
    result = json.loads(out)
    data = load_data("tests.models:static_loader", DataOptions(time_steps=T, limit=7, batch_size=3))
    expected = evaluate(load_model("tests.models:tutorial_net"), data)
    assert result["model"] == "tests.models:tutorial_net" and result["data"] == "tests.models:static_loader"
    assert result["samples"] == 7 and result["time_steps"] == T
    assert result["accuracy"] == pytest.approx(expected.accuracy)
    assert result["firing_rates"] == pytest.approx(expected.firing_rates)
    assert set(result["neurons"]) == {"lif1", "lif2"}


def test_evaluate_table(capsys):
    code, out, _ = cli(capsys, "evaluate", "demo", "--limit", "16", "-T", "2")
    assert code == 0
    assert "demo on digits:test: accuracy" in out and "(16 samples)" in out
    # one row per neuron layer with its neuron count: 16x8x8, 32x4x4, 64, 10
    for layer, neurons in (("1", "1,024"), ("4", "512"), ("8", "64"), ("10", "10")):
        assert re.search(rf"│ {layer} +│ +{neurons} │ +0\.\d{{4}} │", out), (layer, out)


def test_evaluate_rate_encoding_is_seeded(capsys):
    args = ["evaluate", "demo", "--limit", "24", "-T", "3", "--encoding", "rate", "--json", "-"]
    runs = [json.loads(cli(capsys, *args, "--seed", seed)[1]) for seed in ("1", "1", "2")]
    assert runs[0] == runs[1]
    assert runs[0]["firing_rates"] != runs[2]["firing_rates"]


def test_demo_writes_a_file_that_loads_back(capsys, tmp_path):
    target = tmp_path / "x.safetensors"
    code, out, _ = cli(capsys, "demo", "-o", target, "--epochs", "1", "--json", tmp_path / "demo.json")
    assert code == 0 and "wrote" in out
    assert _files(tmp_path) == ["demo.json", "x.safetensors"]
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["output"] == str(target) and 80 <= summary["fp32_accuracy"] <= 100
    assert read_metadata(target)["format"] == "snncompress"
    loaded = load_model(str(target))
    x = load_data("digits", DataOptions(limit=8)).dataset.tensors[0]
    with torch.no_grad():
        got = SNNRunner(loaded).run(x, is_sequence=False, time_steps=2)
    assert got.spikes.shape == (2, 8, 10)


# -- the installed command -----------------------------------------------------------------------------------

def test_installed_command(run_cli):
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"snncompress {__version__}"
    inspected = run_cli("inspect", "demo", "--json", "-")
    assert inspected.returncode == 0, inspected.stderr
    summary = json.loads(inspected.stdout)
    assert summary["neuron_layers"] == 4 and summary["total_parameters"] == 13706
    missing = run_cli("inspect", "tests.models:no_such_factory")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: module 'tests.models' has no attribute 'no_such_factory'"


def test_help_keeps_flag_names_and_examples_whole(capsys, monkeypatch):
    """At 80 columns every flag name is printed whole, and an example command is not broken inside a flag."""
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(capsys, "prune", "--help")
    assert code == 0
    for flag in ("--weights-structured", "--weights-unstructured", "--channel-threshold", "--binary-membrane"):
        assert flag in out, flag
    assert "--weights-unstructured 0.5 --epochs 3" in out and "…" not in out


def test_evaluate_says_when_a_model_with_its_own_loop_ignores_time_steps(capsys):
    code, _, err = cli(capsys, "evaluate", "tests.models:tutorial_net", "--data", "tests.models:static_dataset",
                       "-T", "5")
    assert code == 0 and "runs its own time loop of 3 steps on each sample as it is ([8]); --time-steps 5" in err
    code, _, err = cli(capsys, "evaluate", "tests.models:leaky_mlp", "--data", "tests.models:static_dataset",
                       "-T", "5")
    assert code == 0 and "own time loop" not in err
