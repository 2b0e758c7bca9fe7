"""``snncompress quantize`` through ``snncompress.cli.app.main``: exit codes 0 / 1 / 2, the written file,
and ``evaluate`` of that file reproducing the accuracy ``quantize`` printed (issue 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from snncompress.fileformat.compressed import read_metadata, rounded_figures
from snncompress.passes.quantize import QuantizeConfig
from tests.cli.support import cli

TINY = "tests.models:leaky_mlp"
SEQUENCE_MODEL = "tests.models:tutorial_net"  # a user module with its own time loop
DATA = "tests.models:static_dataset"  # 10 static [8] samples, labels 0..3
# PTQ without adaptive-rounding calibration where the command offers the choice (fast, and the codes
# are the scheme's own rounding); otherwise the command's default
NO_CALIBRATION = ["--calibration", "none"]




def evaluate_json(capsys, model: Path, *args) -> dict:
    code, out, err = cli(capsys, "evaluate", model, "--json", "-", *args)
    assert code == 0, err
    return json.loads(out)


# -- PTQ on the demo model, QAT, both model styles --------------------------------------------------------

def test_ptq_on_demo_writes_the_file_and_evaluate_reproduces_the_accuracy(capsys, tmp_path):
    out, report = tmp_path / "ptq.safetensors", tmp_path / "ptq.json"
    code, stdout, err = cli(capsys, "quantize", "demo", "--data", "digits", "--limit", 64, "-o", out,
                            "--json", report, "--weight-quant", "pot4", "--membrane-quant", "ternary",
                            *NO_CALIBRATION)
    assert code == 0, err
    assert out.exists()
    payload = json.loads(report.read_text())
    (step,) = payload["steps"]
    metrics = step["metrics"]
    before, after = payload["before"]["accuracy"], payload["after"]["accuracy"]
    assert metrics["accuracy_before"] == before and metrics["accuracy_after"] == after
    # printed: before -> after accuracy and stored size
    assert "accuracy (%)" in stdout and f"{before:,.2f}" in stdout and f"{after:,.2f}" in stdout
    assert "stored KiB" in stdout
    assert payload["after"]["storage_bits"] < payload["before"]["storage_bits"]
    # the file: history, codes of every synaptic layer at 4 bits, ternary membranes
    header = read_metadata(out)
    assert header["history"] == rounded_figures(payload["steps"])  # the file keeps 6 digits
    assert step["config"]["weight_quant"] == "pot4" and step["config"]["membrane_quant"] == "ternary"
    assert {k: v["bits"] for k, v in header["tensors"].items() if v["kind"] == "quantized"} == {
        "0.weight": 4, "3.weight": 4, "7.weight": 4, "9.weight": 4}
    assert all(n["membrane"]["levels_low"] == -1 for n in header["neurons"].values())
    # evaluate of the output reproduces it, and evaluates the quantized model (not the fp32 one: its
    # firing rates differ even where the two accuracies happen to be equal)
    result = evaluate_json(capsys, out, "--data", "digits", "--limit", 64)
    assert result["accuracy"] == after and result["samples"] == 64
    fp32 = evaluate_json(capsys, "demo", "--data", "digits", "--limit", 64)
    assert fp32["accuracy"] == before and fp32["firing_rates"] != result["firing_rates"]


def test_sequence_model_ptq_round_trips_through_evaluate(capsys, tmp_path):
    out, report = tmp_path / "seq.safetensors", tmp_path / "seq.json"
    code, _, err = cli(capsys, "quantize", SEQUENCE_MODEL, "--data", DATA, "-T", 3, "-o", out, "--json", report,
                       "--membrane-quant", "int4", "--clip", -1, "--weight-quant", "apot4", "--neuron-quant",
                       "fixed2.6", "--quiet")
    assert code == 0, err
    after = json.loads(report.read_text())["after"]["accuracy"]
    assert evaluate_json(capsys, out, "--data", DATA, "-T", 3, "--trust-code")["accuracy"] == after
    header = read_metadata(out)
    assert header["model"]["kind"] == "factory" and header["model"]["factory"] == SEQUENCE_MODEL
    assert header["neurons"]["lif1"]["membrane_grid"] == 4 and header["neurons"]["lif1"]["membrane"]["levels_low"] == -4
    assert header["tensors"]["lif1.threshold"]["kind"] == "quantized"


def test_qat_is_deterministic_for_a_seed(capsys, tmp_path):
    def qat(name: str, seed: int) -> dict[str, torch.Tensor]:
        out = tmp_path / f"{name}.safetensors"
        code, _, err = cli(capsys, "quantize", TINY, "--data", DATA, "--train-data", DATA, "-T", 3, "-o", out,
                           "--mode", "qat", "--epochs", 2, "--lr", 0.01, "--seed", seed, "--quiet")
        assert code == 0, err
        history = read_metadata(out)["history"]
        assert history[0]["config"]["mode"] == "qat" and len(history[0]["metrics"]["epochs"]) == 2
        return load_file(str(out))

    first, again = qat("a", 0), qat("b", 0)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("extra, noted", [([], False), (["--calibration", "adaround"], True)])
def test_qat_notes_a_calibration_only_when_one_was_asked_for(capsys, tmp_path, extra, noted):
    out = tmp_path / "qat.safetensors"
    code, _, err = cli(capsys, "quantize", TINY, "--data", DATA, "--train-data", DATA, "-T", 3, "-o", out,
                       "--mode", "qat", "--epochs", 1, "--quiet", *extra)
    assert code == 0, err
    notes = read_metadata(out)["history"][0]["notes"]
    assert any("is for PTQ" in n for n in notes) == noted
    assert read_metadata(out)["history"][0]["config"]["calibration"] == "adaround"


def test_overrides_from_a_recipe(capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "version: 1\npasses:\n  - pass: quantize\n    weight_quant: pot4\n"
        + ("    calibration: none\n" if "calibration" in QuantizeConfig.model_fields else "")
        + "    overrides:\n      - targets: ['0']\n        weight_quant: pot8\n"
        "      - targets: ['3']\n        membrane_quant: int4\n")
    out = tmp_path / "out.safetensors"
    code, _, err = cli(capsys, "run", TINY, "--recipe", recipe, "--data", DATA, "-T", 3, "-o", out, "--quiet")
    assert code == 0, err
    header = read_metadata(out)
    assert header["tensors"]["0.weight"]["bits"] == 8 and header["tensors"]["2.weight"]["bits"] == 4
    assert header["neurons"]["1"]["membrane"]["levels_high"] == 1
    assert header["neurons"]["3"]["membrane"]["levels_high"] == 7


def test_failing_gate_exits_1_after_writing_the_output(capsys, tmp_path):
    out, report = tmp_path / "out.safetensors", tmp_path / "run.json"
    code, _, err = cli(capsys, "quantize", TINY, "--data", DATA, "-T", 3, "-o", out, "--json", report,
                       "--gate", "min-memory-reduction=1000", *NO_CALIBRATION)
    assert code == 1
    assert out.exists() and read_metadata(out)["history"][0]["pass"] == "quantize"
    assert json.loads(report.read_text())["gates"][0]["passed"] is False
    assert err.strip().splitlines()[-1].startswith("error: quality gate min-memory-reduction=1000 failed")


# -- bad input: exit 2, one line, nothing written -----------------------------------------------------------

BAD = {  # name -> (extra arguments, text the error must hold)
    "pot1": (["--weight-quant", "pot1"], "pot weights take 2 to 8 bits, not 1"),
    "int0-weights": (["--weight-quant", "int0"], "int weights take 2 to 16 bits, not 0"),
    "int0-membrane": (["--membrane-quant", "int0"], "membrane levels take 2 to 16 bits, not 0"),
    "fixed3": (["--weight-quant", "fixed3"], "fixed<m>.<n>"),
    "clip-below-ternary": (["--clip", "-3"], "clip -3"),
    "clip-below-int4": (["--membrane-quant", "int4", "--clip", "-9"], "does not fit int4"),
    "clip-off-grid": (["--membrane-quant", "int4", "--clip", "-0.3"], "not on the membrane grid"),
    "clip-positive": (["--membrane-quant", "int4", "--clip", "1"], "clip"),
    "clip-with-fp32": (["--membrane-quant", "fp32", "--clip", "-1"], "a membrane clip needs quantized levels"),
    "neuron-quant-pot": (["--neuron-quant", "pot4"], "neuron_quant must be fixed<m>.<n>"),
    "mode": (["--mode", "qta"], "did you mean 'qat'"),
    "rounding-for-pot": (["--rounding", "stochastic"], "rounding 'stochastic' applies only to int and fixed"),
    "no-neurons": (["--model", "tests.models:no_neuron_net"], "has no snnTorch spiking neurons"),
}


def bad_run(capsys, tmp_path: Path, case: str) -> tuple[int, str, str, Path]:
    extra, _ = BAD[case]
    model = TINY
    if extra[0] == "--model":
        model, extra = extra[1], extra[2:]
    out = tmp_path / "out.safetensors"
    code, stdout, err = cli(capsys, "quantize", model, "--data", DATA, "-T", 3, "-o", out, "--quiet", *extra)
    return code, stdout, err, out


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_and_writes_nothing(capsys, tmp_path, case):
    code, stdout, err, out = bad_run(capsys, tmp_path, case)
    assert code == 2, err
    assert "Traceback" not in err + stdout
    assert err.startswith("error: ") and BAD[case][1] in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_error_is_one_line(capsys, tmp_path, case):
    _, _, err, _ = bad_run(capsys, tmp_path, case)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_clip_error_names_the_flag_and_the_value_given(capsys, tmp_path):
    code, _, err = cli(capsys, "quantize", TINY, "--data", DATA, "-T", 3, "-o", tmp_path / "o.safetensors",
                       "--membrane-quant", "int4", "--clip", "-9")
    assert code == 2
    assert "--clip" in err and "-9" in err and "-36" not in err, err


def test_qat_without_training_data_exits_2(capsys, tmp_path, write_tensors):
    gen = torch.Generator().manual_seed(0)
    data = write_tensors("eval.safetensors", x=torch.rand(12, 8, generator=gen), y=torch.arange(12) % 4)
    out = tmp_path / "qat.safetensors"
    code, _, err = cli(capsys, "quantize", TINY, "--data", data, "-T", 3, "-o", out, "--mode", "qat",
                       "--epochs", 1, "--quiet")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "QAT needs training data" in lines[0], err
    assert "--train-data" in lines[0]
    assert not out.exists()
