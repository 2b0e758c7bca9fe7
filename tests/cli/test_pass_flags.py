"""Single-pass commands are generated from their pass config: every key has a flag, defaults come from the config."""

from __future__ import annotations

import inspect

from snncompress.cli.passcmd import RECIPE_ONLY, SHARED_OPTIONS, config_flags, pass_command
from snncompress.passes.quantize import QuantizeConfig


def test_every_quantize_config_key_has_a_flag_and_no_default_of_its_own():
    keys = [k for k in QuantizeConfig.model_fields if k not in RECIPE_ONLY]
    flags = config_flags(QuantizeConfig, {"learn_threshold": "--learn-threshold/--fixed-threshold"})
    assert list(flags) == keys
    assert flags["smoothness"] == "--smoothness" and flags["calibration_iters"] == "--calibration-iters"
    params = inspect.signature(pass_command("quantize", doc="")).parameters
    for key in keys:
        assert params[key].default is None, key  # not given -> the config's default applies
    assert all(name in params for name, _, _ in SHARED_OPTIONS)


def test_flags_reach_the_config_and_unset_flags_take_the_config_defaults(run_cli, tmp_path):
    import json

    out = tmp_path / "q.safetensors"
    result = run_cli("quantize", "tests.models:leaky_mlp", "--data", "tests.models:static_dataset", "-o", str(out),
                     "--calibration-iters", "3", "--calibration-samples", "4", "--smoothness", "0.5",
                     "--fixed-threshold", "--json", "-", "--quiet", "-T", "2")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)["steps"][0]["config"]
    expected = QuantizeConfig(calibration_iters=3, calibration_samples=4, smoothness=0.5,
                              learn_threshold=False).model_dump(mode="json")
    assert config == expected


def test_every_command_takes_json_file_with_dash_for_stdout(run_cli, tmp_path):
    import json

    model, data = "tests.models:leaky_mlp", "tests.models:static_dataset"
    for args in (["inspect", model], ["evaluate", model, "--data", data, "-T", "2"], ["passes"]):
        to_stdout = run_cli(*args, "--json", "-")
        assert to_stdout.returncode == 0, to_stdout.stderr
        payload = json.loads(to_stdout.stdout)  # nothing but the JSON on stdout
        target = tmp_path / f"{args[0]}.json"
        to_file = run_cli(*args, "--json", str(target))
        assert to_file.returncode == 0, to_file.stderr
        assert json.loads(target.read_text()).keys() == payload.keys()
        again = run_cli(*args, "--json", str(target))  # an existing file needs --force, like every output
        assert again.returncode == 2 and "exists; pass --force" in again.stderr
