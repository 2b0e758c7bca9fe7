"""Label-free use from the command line: unlabelled data, ``evaluate --reference``, ``--loss distill`` and
the ``min-agreement`` gate."""

from __future__ import annotations

import json

import torch

from tests.cli.support import assert_input_error, cli
from tests.models import TINY_MODELS

MLP = TINY_MODELS["leaky_mlp"].ref


def _unlabelled(write_tensors, name="x.safetensors", n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return write_tensors(name, x=torch.rand(n, 8, generator=gen))


def test_evaluate_unlabelled_data_says_accuracy_na(capsys, write_tensors):
    data = _unlabelled(write_tensors)
    code, out, err = cli(capsys, "evaluate", MLP, "--data", data, "--time-steps", "3")
    assert code == 0, err
    assert "accuracy n/a (unlabelled data) (12 samples)" in " ".join(out.split())
    code, out, _ = cli(capsys, "evaluate", MLP, "--data", data, "--time-steps", "3", "--json", "-")
    payload = json.loads(out)
    assert payload["accuracy"] is None and payload["labelled"] is False and payload["samples"] == 12
    assert "predictions" not in payload and "neuron_rates" not in payload


def test_evaluate_against_a_reference(capsys, tmp_path, write_tensors):
    data = _unlabelled(write_tensors)
    quantized = tmp_path / "q.safetensors"
    code, _, err = cli(capsys, "quantize", MLP, "--data", data, "--time-steps", "3", "--weight-quant", "int4",
                       "--membrane-quant", "int4", "--calibration", "none", "-o", quantized, "-q")
    assert code == 0, err
    code, out, err = cli(capsys, "evaluate", quantized, "--data", data, "--reference", MLP, "--json", "-")
    assert code == 0, err
    payload = json.loads(out)
    ref = payload["reference"]
    assert ref["model"] == MLP and ref["samples"] == 12 and 0 <= ref["agreement"] <= 100
    assert set(ref["layers"]) == {"1", "3"} and ref["unmatched"] == [] and ref["reference_accuracy"] is None
    for layer in ref["layers"].values():
        assert layer["emd"] >= 0 and (layer["correlation"] is None or -1 <= layer["correlation"] <= 1)
    assert payload["time_steps"] == 3  # the file's recorded T, for the reference too
    code, out, err = cli(capsys, "evaluate", quantized, "--data", data, "--reference", MLP)
    text = " ".join(out.split())
    assert code == 0 and f"agreement with {MLP}: {ref['agreement']:.2f}% of predictions" in text
    assert "(EMD)" in text and f"{ref['layers']['3']['emd']:.4f}" in text
    # the model against itself
    code, out, _ = cli(capsys, "evaluate", MLP, "--data", "tests.models:static_dataset", "-T", "3",
                       "--reference", MLP, "--json", "-")
    same = json.loads(out)["reference"]
    assert same["agreement"] == 100.0 and all(v["emd"] == 0.0 for v in same["layers"].values())
    assert same["reference_accuracy"] == json.loads(out)["accuracy"]


def test_reference_errors(capsys, write_tensors, tmp_path):
    data = _unlabelled(write_tensors)
    assert_input_error(capsys, "evaluate", MLP, "--data", data, "--reference-weights", tmp_path / "w.safetensors",
                       match="--reference-weights applies to a --reference model")
    assert_input_error(capsys, "evaluate", MLP, "--data", data, "--reference", "demo",
                       match="do not fit the model")


def test_quantize_qat_distill_on_unlabelled_data_with_an_agreement_gate(capsys, tmp_path, write_tensors):
    data = _unlabelled(write_tensors, "test.safetensors")
    train = _unlabelled(write_tensors, "train.npz", n=16, seed=1)
    out, report = tmp_path / "qat.safetensors", tmp_path / "qat.json"
    args = ["quantize", MLP, "--data", data, "--train-data", train, "--time-steps", "3", "--mode", "qat",
            "--epochs", "1", "--weight-quant", "int4", "--membrane-quant", "int4"]
    assert_input_error(capsys, *args, "-o", out, match="passes[0] (quantize): the training data "
                                                       f"{train} has no labels; loss ce needs them")
    code, stdout, err = cli(capsys, *args, "--loss", "distill", "--distill-layers", "0.5", "--gate",
                            "min-agreement=0", "-o", out, "--json", report)
    assert code == 0, err
    payload = json.loads(report.read_text())
    assert payload["before"]["accuracy"] is None and payload["figures"]["accuracy_drop"] is None
    assert payload["figures"]["agreement"] == payload["fidelity"]["agreement"]
    assert payload["steps"][0]["config"]["loss"] == "distill" and payload["steps"][0]["config"]["distill_layers"] == 0.5
    assert "agreement with the input model" in " ".join(stdout.split()) and "n/a" in stdout
    assert payload["gates"][0]["passed"]
    code, stdout, err = cli(capsys, *args, "--loss", "distill", "--gate", "min-agreement=100.1", "-o", out, "--force")
    assert code == 1 and "min-agreement=100.1 failed" in " ".join(stdout.split())


def test_the_clipping_analysis_needs_labels(capsys, write_tensors):
    data = _unlabelled(write_tensors)
    assert_input_error(capsys, "analyze", MLP, "--data", data, "-T", "3",
                       match="the clipping analysis measures accuracy at every boundary, and")
