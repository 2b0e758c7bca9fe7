"""``snncompress verify`` (issue 17): exit 0 when every spike matches, 1 with the count and the first location
when not, 2 when the file cannot run integer-only; the bundle it writes runs the same, and a bundle whose
codes were altered after quantization is caught."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli.support import assert_input_error, cli


@pytest.fixture(scope="module")
def quantized_demo(tmp_path_factory):
    """The demo model quantized as the README shows (PTQ pot4 / ternary), on 48 test samples for speed."""
    out = tmp_path_factory.mktemp("verify") / "q.safetensors"
    with pytest.raises(SystemExit) as info:
        from snncompress.cli.app import main

        main(["quantize", "demo", "--data", "digits", "--limit", "48", "--calibration", "none", "-o", str(out)])
    assert info.value.code == 0
    return out


def test_verify_demo_is_bit_exact_and_writes_json_and_bundle(capsys, tmp_path, quantized_demo):
    report, bundle = tmp_path / "v.json", tmp_path / "bundle"
    code, out, err = cli(capsys, "verify", quantized_demo, "--data", "digits", "--limit", 48, "--json", report,
                         "--write-bundle", bundle)
    assert code == 0, err
    assert "bit-exact: 0 mismatching spikes of" in out
    payload = json.loads(report.read_text())
    assert payload["bit_exact"] is True and payload["mismatching_spikes"] == 0
    assert payload["samples"] == 48 and payload["time_steps"] == 8 and payload["input_fraction_bits"] == 4
    assert set(payload["mismatches_per_layer_and_step"]) == {"1", "4", "8", "10"}
    assert (bundle / "program.json").exists() and (bundle / "tensors.bin").exists()
    code, out, err = cli(capsys, "verify", quantized_demo, "--data", "digits", "--limit", 48, "--bundle", bundle)
    assert code == 0, err
    assert "bit-exact" in out

    # alter one weight code of the first layer in the bundle's binary: the torch model keeps the file's codes
    doc = json.loads((bundle / "program.json").read_text())
    entry = doc["ops"][0]["weight"]
    data = bytearray((bundle / "tensors.bin").read_bytes())
    weights = np.frombuffer(bytes(data), dtype="<i8", count=int(np.prod(entry["shape"])), offset=entry["offset"])
    altered = weights.copy()
    altered[: altered.size // 2] = -altered[: altered.size // 2]
    data[entry["offset"]:entry["offset"] + 8 * altered.size] = altered.astype("<i8").tobytes()
    (bundle / "tensors.bin").write_bytes(bytes(data))
    code, out, err = cli(capsys, "verify", quantized_demo, "--data", "digits", "--limit", 48, "--bundle", bundle)
    assert code == 1
    assert "NOT bit-exact" in out
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "mismatching spike(s)" in line and "first at sample" in line
    assert "layer '1', step 0" in line  # the first layer's spikes differ from the first step


def test_verify_refuses_an_fp32_membrane_naming_the_layer(capsys, tmp_path):
    out = tmp_path / "fp32mem.safetensors"
    code, _, err = cli(capsys, "quantize", "tests.models:leaky_mlp", "--data", "tests.models:static_dataset",
                       "--membrane-quant", "fp32", "--calibration", "none", "-o", out)
    assert code == 0, err
    assert_input_error(capsys, "verify", out, "--data", "tests.models:static_dataset",
                       match="neuron layer '1' (Leaky) keeps an fp32 membrane")


def test_verify_options_conflict(capsys, tmp_path, quantized_demo):
    assert_input_error(capsys, "verify", quantized_demo, "--bundle", tmp_path / "a", "--write-bundle", tmp_path / "b",
                       match="pass one of them")
    assert_input_error(capsys, "verify", quantized_demo, "--data", "digits", "--bundle", tmp_path / "missing",
                       match="not a bundle folder")


def test_run_with_the_bit_exact_gate(capsys, tmp_path):
    out, report = tmp_path / "r.safetensors", tmp_path / "r.json"
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\npasses:\n  - pass: quantize\n    weight_quant: int8\n    membrane_quant: int4\n"
                      "    calibration: none\n")
    code, stdout, err = cli(capsys, "run", "tests.models:conv2d_net", "--recipe", recipe, "--data",
                            "tests.models:static_images", "-o", out, "--gate", "bit-exact", "--json", report)
    assert code == 0, err
    gate = json.loads(report.read_text())["gates"][0]
    assert gate["gate"] == "bit-exact" and gate["passed"] and gate["value"] == 0
    assert "bit-exact=0 passed: 0 mismatching spikes" in stdout

    # a model that cannot run integer-only fails the gate (exit 1) with the reason; the file is still written
    code, stdout, err = cli(capsys, "run", "tests.models:conv2d_net", "--recipe", recipe, "--data",
                            "tests.models:static_images", "-o", tmp_path / "f.safetensors", "--gate", "bit-exact",
                            "--set", "quantize.membrane_quant=fp32")
    assert code == 1
    assert "keeps an fp32 membrane" in err and (tmp_path / "f.safetensors").exists()
