"""Loading an untrusted compressed file (issue 10): no code runs without consent, no silent wrong load,
one-line errors for every malformed header, no allocation a header alone asks for."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import torch

from snncompress.errors import FileFormatError, ModelLoadError
from snncompress.fileformat.compressed import load_compressed, read_metadata, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.fileformat.packing import pack_codes
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.quant.membrane import MembraneQuantizer
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.state import get_state
from tests.cli.support import assert_input_error, cli
from tests.fileformat.forge import data_region, edit_json, forge
from tests.models import leaky_mlp

EVIL_SOURCE = (
    "import pathlib\n"
    "pathlib.Path('ran.txt').write_text('the file ran code')\n"
    "from tests.models import tutorial_net as build\n"
    "def data():\n"
    "    pathlib.Path('ran.txt').write_text('the file ran code')\n"
    "    raise SystemExit(0)\n"
)


def _factory_file(tmp_path: Path) -> Path:
    model = load_model("tests.models:tutorial_net")
    return save_compressed(model, tmp_path / "user.safetensors")


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module in the working directory that leaves ``ran.txt`` when imported; its name is unique per test."""
    name = f"snnc_evil_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(EVIL_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    yield name
    sys.modules.pop(name, None)


def _names_evil(src: Path, dst: Path, module: str) -> Path:
    return forge(src, dst, metadata=edit_json("model", lambda m: m.update(factory=f"{module}:build")))


# -- 1. code runs only with consent --------------------------------------------------------------------------

def test_factory_file_is_refused_without_trust_naming_the_code_and_the_ways_to_allow_it(tmp_path):
    path = _factory_file(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path))
    message = str(info.value)
    assert "\n" not in message
    for part in ("tests.models:tutorial_net", "--trust-code", "SNNCOMPRESS_TRUST_CODE=1", "trust_code=True",
                 f"tests.models:tutorial_net --weights {path}"):
        assert part in message, part
    assert type(load_model(str(path), trust_code=True)).__name__ == "TutorialNet"


def test_the_user_naming_the_factory_needs_no_trust_and_loads_the_same_model(tmp_path):
    path = _factory_file(tmp_path)
    named = load_model("tests.models:tutorial_net", weights=path)
    trusted = load_model(str(path), trust_code=True)
    for key, value in trusted.state_dict().items():
        assert torch.equal(named.state_dict()[key], value)
    assert get_state(named).source["factory"] == "tests.models:tutorial_net"


def test_no_code_runs_on_load_and_sys_path_is_untouched(tmp_path, evil_module):
    path = _names_evil(_factory_file(tmp_path), tmp_path / "evil.safetensors", evil_module)
    before = list(sys.path)
    with pytest.raises(ModelLoadError, match=f"{evil_module}:build"):
        load_model(str(path))
    # trusted, the library still does not look in the working directory: only the CLI does, explicitly
    with pytest.raises(ModelLoadError, match=f"cannot import '{evil_module}'"):
        load_model(str(path), trust_code=True)
    assert sys.path == before
    assert not (tmp_path / "ran.txt").exists()


@pytest.mark.parametrize("command", [["inspect"], ["evaluate", "--data", "tests.models:static_dataset", "-T", "3"],
                                     ["report", "--data", "tests.models:static_dataset", "-T", "3"],
                                     ["export", "-o", "out.nir"]])
def test_every_command_refuses_a_factory_file_in_one_line(capsys, tmp_path, evil_module, command):
    path = _names_evil(_factory_file(tmp_path), tmp_path / "evil.safetensors", evil_module)
    line = assert_input_error(capsys, command[0], path, *command[1:], match=f"{evil_module}:build")
    assert "--trust-code" in line
    assert not (tmp_path / "ran.txt").exists()
    assert not (tmp_path / "out.nir").exists()


def test_trust_code_flag_and_environment_variable(capsys, tmp_path, evil_module, monkeypatch):
    path = _names_evil(_factory_file(tmp_path), tmp_path / "evil.safetensors", evil_module)
    code, out, err = cli(capsys, "inspect", path, "--trust-code", "--json", "-")
    assert code == 0, err
    assert (tmp_path / "ran.txt").exists()  # trusted: its code ran, found in the working directory
    assert json.loads(out)["layers"]
    (tmp_path / "ran.txt").unlink()
    sys.modules.pop(evil_module, None)
    monkeypatch.setenv("SNNCOMPRESS_TRUST_CODE", "1")
    code, _, err = cli(capsys, "inspect", path)
    assert code == 0, err
    assert (tmp_path / "ran.txt").exists()


def test_evaluate_with_the_factory_named_by_the_user(capsys, tmp_path):
    path = _factory_file(tmp_path)
    code, out, err = cli(capsys, "evaluate", "tests.models:tutorial_net", "--weights", path, "--data",
                         "tests.models:static_dataset", "-T", "3", "--json", "-")
    assert code == 0, err
    assert "accuracy" in json.loads(out)


def test_sequential_files_load_with_no_flag(tmp_path):
    path = save_compressed(leaky_mlp(), tmp_path / "seq.safetensors")
    assert read_metadata(path)["model"]["kind"] == "sequential"
    assert type(load_model(str(path))) is torch.nn.Sequential


def test_a_recorded_baseline_data_function_is_never_called(capsys, tmp_path, evil_module):
    model = leaky_mlp()
    get_state(model).baseline = {"model": "x", "data": f"{evil_module}:data", "time_steps": 3}
    path = save_compressed(model, tmp_path / "base.safetensors")
    assert_input_error(capsys, "report", path, "-T", "3", match="never runs; pass --data")
    # export falls back on nothing else silently: the recorded data set is refused, with the fix
    assert_input_error(capsys, "export", path, "-T", "3", "-o", "x.nir", match="never runs; pass --data")
    assert not (tmp_path / "ran.txt").exists()


# -- 2. silent wrong loads -------------------------------------------------------------------------------------

@pytest.fixture
def dense(tmp_path) -> Path:
    return save_compressed(leaky_mlp(), tmp_path / "dense.safetensors")


def _quantized(tmp_path: Path, spec: str, tensor: str = "0.weight") -> Path:
    model = leaky_mlp()
    scheme = parse_weight_scheme(spec)
    param = model.get_parameter(tensor)
    enc = scheme.encode(param.detach())
    with torch.no_grad():
        param.copy_(scheme.decode(enc))
    get_state(model).tensors[tensor] = enc
    return save_compressed(model, tmp_path / f"{spec}.safetensors")


def test_every_flipped_tensor_byte_is_refused(dense, tmp_path):
    start, spans = data_region(dense)
    data = dense.read_bytes()
    for begin, end in spans.values():
        for offset in {begin, (begin + end) // 2, end - 1}:
            bad = bytearray(data)
            bad[start + offset] ^= 0x10
            path = tmp_path / "flipped.safetensors"
            path.write_bytes(bytes(bad))
            with pytest.raises(FileFormatError, match="do not match its sha256 digest"):
                load_model(str(path))


def test_a_float_tensor_stored_as_integers_is_refused(dense, tmp_path):
    def as_int(t):
        t["0.weight"] = t["0.weight"].view(torch.int32).clone()

    with pytest.raises(FileFormatError, match="'0.weight' is stored as int32, header says float32"):
        load_model(str(forge(dense, tmp_path / "a.safetensors", tensors=as_int)))
    both = forge(dense, tmp_path / "b.safetensors", tensors=as_int,
                 metadata=edit_json("tensors", lambda t: t["0.weight"].update(dtype="int32")))
    with pytest.raises(FileFormatError, match="'0.weight' is int32 in the file, float32 in the rebuilt model"):
        load_model(str(both))


def test_a_ternary_code_naming_no_level_is_refused(tmp_path):
    good = _quantized(tmp_path, "ternary")

    def code_three(t):
        t["0.weight::codes"] = t["0.weight::codes"].clone()
        t["0.weight::codes"][0] |= 0b11  # the first 2-bit code becomes 3

    path = forge(good, tmp_path / "bad.safetensors", tensors=code_three)
    with pytest.raises(FileFormatError, match=r"'0.weight' holds \d+ code\(s\) that name no level of ternary"):
        load_model(str(path))


def test_symmetric_int_code_zero_is_refused(tmp_path):
    good = _quantized(tmp_path, "int4")

    def zero(t):
        t["0.weight::codes"] = torch.zeros_like(t["0.weight::codes"])

    with pytest.raises(FileFormatError, match="name no level of int4"):
        load_model(str(forge(good, tmp_path / "bad.safetensors", tensors=zero)))


def test_eight_bit_codes_under_a_four_bit_scheme_are_refused(tmp_path):
    good = _quantized(tmp_path, "pot4")
    count = 96

    def wide(t):
        t["0.weight::codes"] = pack_codes(torch.full((count,), 200), 8)

    path = forge(good, tmp_path / "bad.safetensors", tensors=wide,
                 metadata=edit_json("tensors", lambda t: t["0.weight"].update(bits=8)))
    with pytest.raises(FileFormatError, match="stores 8-bit codes, but its scheme pot4 uses 4"):
        load_model(str(path))


@pytest.mark.parametrize("version,match", [
    (None, r"no format_version"), ("0", "versions start at 1"), ("-1", "format_version '-1'"),
    ("3", "format version 3 is newer"), ("1.0", "format_version '1.0'"), ("", "format_version ''"),
])
def test_bad_format_versions(dense, tmp_path, version, match):
    def edit(meta):
        if version is None:
            del meta["format_version"]
        else:
            meta["format_version"] = version

    with pytest.raises(FileFormatError, match=match):
        load_model(str(forge(dense, tmp_path / "v.safetensors", metadata=edit)))


def test_version_1_files_load_without_the_digest_with_a_note(dense, tmp_path, capsys):
    def downgrade(meta):
        meta["format_version"] = "1"
        del meta["sha256"]

    path = forge(dense, tmp_path / "v1.safetensors", metadata=downgrade)
    loaded = load_model(str(path))
    for key, value in leaky_mlp().state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert "format version 1 file, which has no digest" in capsys.readouterr().err
    both = forge(dense, tmp_path / "v1sha.safetensors", metadata=lambda m: m.update(format_version="1"))
    with pytest.raises(FileFormatError, match="a version 1 file carries no sha256"):
        load_model(str(both))


# -- 3. one schema, one-line errors ------------------------------------------------------------------------------

def _membrane_file(tmp_path: Path) -> Path:
    model = leaky_mlp()
    install_membrane_quantizer(model, "1", MembraneQuantizer.ternary())
    return save_compressed(model, tmp_path / "mem.safetensors")


DEEP = "[" * 200_000 + "]" * 200_000

HEADER_EDITS = {
    "model is a list": (lambda m: m.update(model="[]"), r"corrupted header \(model: Input should be"),
    "tensors is a number": (lambda m: m.update(tensors="3"), r"corrupted header \(tensors: Input should be"),
    "a neuron record is a number": (lambda m: m.update(neurons='{"1": 5}'), r"neurons.1: Input should be"),
    "history is an object": (lambda m: m.update(history="{}"), r"history: Input should be a valid list"),
    "history nested too deep for Python": (lambda m: m.update(history=DEEP), "history is nested"),
    "history nested 100 deep": (lambda m: m.update(history="[" * 100 + "]" * 100), "nested deeper than 64"),
    "baseline data is a number": (edit_json("baseline", lambda b: {"data": 5}), "baseline.data: Input should be"),
    "shape holds a string": (edit_json("tensors", lambda t: t["0.bias"].update(shape=["12"])),
                             r"tensors.0.bias.shape.0: Input should be a valid integer"),
    "negative dimension": (edit_json("tensors", lambda t: t["0.bias"].update(shape=[-12])),
                           r"tensors.0.bias.shape.0: Input should be greater than or equal to 0"),
    "unknown field": (lambda m: m.update(extra="1"), "unknown field 'extra'"),
    "factory that is not a reference": (edit_json("model", lambda s: {"kind": "factory", "factory": "os.system"}),
                                        "is not a package.module:attr reference"),
    "unknown layer type": (edit_json("model", lambda s: s["architecture"]["children"][0][1].update(type="Exec")),
                           "unknown layer type 'Exec'"),
    "a child name with a dot": (edit_json("model", lambda s: s["architecture"]["children"][0].__setitem__(0, "a.b")),
                                "bad child name"),
    "a surrogate that is not snnTorch's": (
        edit_json("model", lambda s: s["architecture"]["children"][1][1]["args"].update(spike_grad="Heaviside")),
        "unknown surrogate gradient 'Heaviside'"),
    "a layer argument that is an object": (
        edit_json("model", lambda s: s["architecture"]["children"][0][1]["args"].update(in_features={"a": 1})),
        "argument in_features of Linear is not a number"),
    "negative layer size": (
        edit_json("model", lambda s: s["architecture"]["children"][0][1]["args"].update(in_features=-8)),
        "layer '0': Linear has a negative size"),
}


@pytest.mark.parametrize("name", sorted(HEADER_EDITS))
def test_malformed_header_fields(dense, tmp_path, capsys, name):
    edit, match = HEADER_EDITS[name]
    path = forge(dense, tmp_path / "bad.safetensors", metadata=edit)
    with pytest.raises(FileFormatError, match=match) as info:
        load_model(str(path))
    assert "\n" not in str(info.value)
    assert_input_error(capsys, "inspect", path, match="corrupted header")


@pytest.mark.parametrize("edit,match", [
    (lambda n: n["1"].update(membrane_grid="x"), "neurons.1.membrane_grid: Input should be a valid integer"),
    (lambda n: n["1"].update(membrane_grid=0), "neurons.1.membrane_grid: Input should be greater than"),
    (lambda n: n["1"].update(membrane_unit=-1.0), "the membrane unit must be positive"),
    (lambda n: n["1"].update(membrane_unit="big"), "neurons.1.membrane_unit"),
    (lambda n: n["1"].update(membrane_unit=[1.0, 2.0]), "membrane unit of '1' does not fit its threshold"),
    (lambda n: n["1"]["membrane"].update(levels_low=5), "neurons.1"),
    (lambda n: n.update({"0": n["1"]}), "neurons names '0', not a neuron layer"),
])
def test_malformed_membrane_records(tmp_path, edit, match):
    path = forge(_membrane_file(tmp_path), tmp_path / "bad.safetensors", metadata=edit_json("neurons", edit))
    with pytest.raises(FileFormatError, match=match):
        load_model(str(path))


# -- 4. sizes are checked before anything is built ----------------------------------------------------------------

def test_a_huge_layer_in_a_small_header_is_refused_before_allocating(dense, tmp_path):
    def huge(s):
        s["architecture"]["children"][0][1]["args"].update(in_features=10**6, out_features=10**6)

    path = forge(dense, tmp_path / "huge.safetensors", metadata=edit_json("model", huge))
    assert path.stat().st_size < 16_000
    start = time.perf_counter()
    with pytest.raises(FileFormatError, match=r"layer '0' Linear would allocate 1,000,001,000,000 elements"):
        load_compressed(path)
    assert time.perf_counter() - start < 5


def test_a_huge_declared_tensor_is_refused_against_the_stored_bytes(dense, tmp_path):
    edit = edit_json("tensors", lambda t: t["0.weight"].update(shape=[10**6, 10**6]))
    with pytest.raises(FileFormatError, match="holds 1000000000000 elements, more than"):
        load_compressed(forge(dense, tmp_path / "a.safetensors", metadata=edit))
    edit = edit_json("tensors", lambda t: t["0.weight"].update(shape=[10**4, 10**4]))
    with pytest.raises(FileFormatError, match=r"'0.weight' has shape \[12, 8\], header says \[10000, 10000\]"):
        load_compressed(forge(dense, tmp_path / "b.safetensors", metadata=edit))


@pytest.mark.parametrize("description,match", [
    (5, "baseline.description: Input should be a valid dictionary"),
    ({"layers": 5}, "baseline description: TypeError"),
    ({"layers": [3]}, "baseline description: TypeError"),
    ({"layers": [], "name": "x"}, "baseline description: missing 'time_steps'"),
    ({"layers": [{"layer_type": "neuron", "name": [1]}]}, "baseline description layers[0]"),
    ({"layers": [], "name": "x", "time_steps": "many"}, "has no layers"),
])
def test_report_on_a_forged_baseline_description_is_one_line(capsys, dense, tmp_path, description, match):
    def edit(baseline):
        baseline.update(model="x", data="digits", time_steps=3, description=description)

    path = forge(dense, tmp_path / "desc.safetensors", metadata=edit_json("baseline", edit))
    assert_input_error(capsys, "report", path, "--data", "tests.models:static_dataset", "-T", "3", match=match)


def test_a_scheme_parameter_of_the_wrong_shape_is_refused(tmp_path):
    good = _quantized(tmp_path, "pot4")

    def per_row(t):
        t["0.weight::exponent"] = t["0.weight::exponent"].reshape(1).repeat(12).reshape(12, 1).clone()

    path = forge(good, tmp_path / "bad.safetensors", tensors=per_row)
    with pytest.raises(FileFormatError, match=r"'0.weight::exponent' is int32 \[12, 1\], pot4 needs int32 \[\]"):
        load_model(str(path))
