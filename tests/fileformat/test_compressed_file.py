"""The compressed .safetensors file: bit-exact save/load, its header, and damaged files."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from snncompress import __version__
from snncompress.errors import DomainError, FileFormatError, InputError, ModelLoadError, OutputError
from snncompress.fileformat.compressed import (
    FORMAT_NAME,
    FORMAT_VERSION,
    content_digest,
    is_compressed_file,
    read_metadata,
    rounded_figures,
    save_compressed,
)
from snncompress.fileformat.loading import load_model
from snncompress.models.neurons import neuron_layers
from snncompress.sim.observers import Recorder
from snncompress.sim.runner import SNNRunner
from snncompress.state import get_state
from tests.models import NO_STORED_MEMBRANE_MODELS, SEQUENTIAL_MODELS, TINY_MODELS, T, leaky_mlp, tutorial_net

try:
    from snncompress.models.membrane import install_membrane_quantizer
    from snncompress.quant.membrane import MembraneQuantizer
    from snncompress.quant.schemes import parse_weight_scheme

    QUANT_MISSING = ""
except ImportError as exc:  # the quantizers are another module; fp32 files must not depend on them
    QUANT_MISSING = f"snncompress.quant is not importable: {exc}"

needs_quant = pytest.mark.skipif(bool(QUANT_MISSING), reason=QUANT_MISSING or "quant available")


def _build(name: str) -> nn.Module:
    """The model as a user would load it (a factory reference, so user modules can be saved)."""
    return load_model(TINY_MODELS[name].ref)


def _activity(model: nn.Module, name: str):
    """Output and every neuron layer's spikes and membrane at every step."""
    tm = TINY_MODELS[name]
    runner = SNNRunner(model)
    recorder = Recorder()
    with torch.no_grad(), runner.observe(recorder):
        out = runner.run(tm.example_inputs(), is_sequence=tm.is_sequence, time_steps=T)
    spikes, membrane = recorder.stacked()
    return out, spikes, membrane


def assert_same_activity(a: nn.Module, b: nn.Module, name: str) -> None:
    out_a, spk_a, mem_a = _activity(a, name)
    out_b, spk_b, mem_b = _activity(b, name)
    assert torch.equal(out_a.spikes, out_b.spikes)
    assert torch.equal(out_a.membrane, out_b.membrane)
    assert spk_a.keys() == spk_b.keys()
    for layer in spk_a:
        assert torch.equal(spk_a[layer], spk_b[layer]), layer
        assert torch.equal(mem_a[layer], mem_b[layer]), layer


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- fp32 round trip ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_fp32_save_load_is_bit_exact(name, tmp_path):
    model = _build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = save_compressed(model, tmp_path / "out.safetensors")
    assert _files(tmp_path) == ["out.safetensors"]
    assert is_compressed_file(path)
    loaded = load_model(str(path), trust_code=True)
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])  # saving does not touch the model
        assert torch.equal(loaded.state_dict()[key], value), key
        assert loaded.state_dict()[key].dtype == value.dtype
    assert_same_activity(model, loaded, name)


@pytest.mark.parametrize("name", SEQUENTIAL_MODELS)
def test_sequential_files_rebuild_without_the_users_code(name, tmp_path, monkeypatch):
    path = save_compressed(TINY_MODELS[name].build(), tmp_path / "out.safetensors")
    source = read_metadata(path)["model"]
    assert source["kind"] == "sequential" and source["style"] == "stepwise"
    assert source["architecture"]["type"] == "Sequential"

    def no_factory(ref):
        raise AssertionError(f"the factory {ref} was called")

    monkeypatch.setattr("snncompress.models.source.call_factory", no_factory)
    loaded = load_model(str(path))
    assert type(loaded) is nn.Sequential
    assert_same_activity(TINY_MODELS[name].build(), loaded, name)


def test_user_module_file_records_its_factory(tmp_path):
    path = save_compressed(_build("tutorial_net"), tmp_path / "out.safetensors")
    assert read_metadata(path)["model"] == {"kind": "factory", "factory": "tests.models:tutorial_net",
                                            "style": "sequence"}
    assert type(load_model(str(path), trust_code=True)).__name__ == "TutorialNet"


def test_user_module_without_a_factory_cannot_be_saved(tmp_path):
    with pytest.raises(ModelLoadError, match="TutorialNet is a user module.*package.module:factory"):
        save_compressed(tutorial_net(), tmp_path / "out.safetensors")
    assert _files(tmp_path) == []


# -- the header ---------------------------------------------------------------------------------------------

def test_metadata_header(tmp_path):
    model = _build("synaptic_mlp")
    state = get_state(model)
    state.history.append({"pass": "prune", "config": {"sparsity": 0.5}, "metrics": {"accuracy": 91.5}})
    state.baseline = {"accuracy": 93.0}
    path = save_compressed(model, tmp_path / "out.safetensors")
    meta = read_metadata(path)
    assert meta["format"] == FORMAT_NAME == "snncompress"
    assert meta["format_version"] == str(FORMAT_VERSION) == "2"
    assert meta["snncompress_version"] == __version__
    assert meta["model"]["kind"] == "sequential" and meta["model"]["factory"] == "tests.models:synaptic_mlp"
    assert set(meta["tensors"]) == set(model.state_dict())
    assert meta["tensors"]["0.weight"] == {"shape": [12, 8], "dtype": "float32", "kind": "dense"}
    assert meta["tensors"]["1.alpha"]["shape"] == []
    assert set(meta["neurons"]) == {"1", "3"}
    assert meta["neurons"]["1"]["params"]["neuron_type"] == "Synaptic"
    assert meta["neurons"]["1"]["params"]["alpha"] == pytest.approx(0.6)
    assert meta["history"] == rounded_figures(state.history) and meta["baseline"] == {"accuracy": 93.0}
    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata()
        assert sorted(f.keys()) == sorted(model.state_dict())
    assert all(isinstance(v, str) for v in raw.values())
    loaded = get_state(load_model(str(path)))
    assert loaded.history == rounded_figures(state.history) and loaded.baseline == state.baseline
    assert loaded.source["kind"] == "sequential"


# -- pruned and quantized tensors ---------------------------------------------------------------------------

def test_pruned_tensor_stores_only_kept_values_and_the_mask(tmp_path):
    model = _build("conv2d_net")
    weight = model[5].weight
    mask = torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) > 0.6
    with torch.no_grad():
        weight.mul_(mask)
    get_state(model).masks["5.weight"] = mask
    path = save_compressed(model, tmp_path / "out.safetensors")
    meta = read_metadata(path)
    assert meta["tensors"]["5.weight"] == {"shape": [4, 4, 3, 3], "dtype": "float32", "kind": "pruned",
                                           "kept": int(mask.sum()), "mask": True}
    with safe_open(str(path), framework="pt") as f:
        assert "5.weight" not in f.keys()
        assert f.get_tensor("5.weight::values").numel() == int(mask.sum())
        assert f.get_tensor("5.weight::mask").numel() == (mask.numel() + 7) // 8
    loaded = load_model(str(path), trust_code=True)
    assert torch.equal(get_state(loaded).masks["5.weight"], mask)
    assert torch.equal(loaded[5].weight, weight)
    assert_same_activity(model, loaded, "conv2d_net")


WEIGHT_SCHEMES = ["pot2", "pot4", "apot4", "int3", "int8", "int16", "ternary", "fixed3.5"]
QUANT_TARGETS = {"leaky_mlp": "0.weight", "rleaky_mlp": "1.recurrent.weight", "conv2d_net": "5.weight",
                 "conv1d_net": "0.weight", "tutorial_net": "fc1.weight", "synaptic_mlp": "2.weight",
                 "subtract_reset_mlp": "2.weight", "zero_reset_mlp": "0.weight",
                 "tutorial_sequence_net": "fc2.weight", "rsynaptic_mlp": "1.recurrent.weight",
                 "lapicque_mlp": "2.weight", "alpha_mlp": "0.weight", "one_step_conv_net": "conv2.weight"}
assert set(QUANT_TARGETS) == set(TINY_MODELS)


def _quantize(model: nn.Module, tensor: str, spec: str):
    scheme = parse_weight_scheme(spec)
    param = model.get_parameter(tensor)
    enc = scheme.encode(param.detach())
    with torch.no_grad():
        param.copy_(scheme.decode(enc))
    get_state(model).tensors[tensor] = enc
    return enc


@needs_quant
@pytest.mark.parametrize("spec", WEIGHT_SCHEMES)
@pytest.mark.parametrize("name", sorted(QUANT_TARGETS))
def test_quantized_weight_and_membrane_round_trip_bit_exact(name, spec, tmp_path):
    model = _build(name)
    enc = _quantize(model, QUANT_TARGETS[name], spec)
    first_neuron = neuron_layers(model)[0][0]
    stored = name not in NO_STORED_MEMBRANE_MODELS  # Alpha keeps no membrane to quantize
    if stored:
        install_membrane_quantizer(model, first_neuron, MembraneQuantizer.ternary())
    path = save_compressed(model, tmp_path / "out.safetensors")
    entry = read_metadata(path)["tensors"][QUANT_TARGETS[name]]
    assert entry["kind"] == "quantized" and entry["bits"] == enc.bits and entry["scheme"] == enc.scheme
    with safe_open(str(path), framework="pt") as f:
        packed = f.get_tensor(QUANT_TARGETS[name] + "::codes")
    assert packed.dtype == torch.uint8 and packed.numel() == -(-enc.codes.numel() * enc.bits // 8)
    loaded = load_model(str(path), trust_code=True)
    restored = get_state(loaded).tensors[QUANT_TARGETS[name]]
    assert torch.equal(restored.codes, enc.codes) and restored.bits == enc.bits
    if stored:
        assert get_state(loaded).neurons[first_neuron]["membrane"] == MembraneQuantizer.ternary().to_dict()
    assert_same_activity(model, loaded, name)


@needs_quant
def test_membrane_quantizer_is_active_after_loading(tmp_path):
    model = _build("leaky_mlp")
    install_membrane_quantizer(model, "1", MembraneQuantizer.from_bits(2, top=1))
    loaded = load_model(str(save_compressed(model, tmp_path / "out.safetensors")), trust_code=True)
    _, _, fp32_membrane = _activity(_build("leaky_mlp"), "leaky_mlp")
    out, _, membrane = _activity(loaded, "leaky_mlp")
    stored = loaded[1].mem  # the last step's stored (post-reset, quantized) membrane
    assert set(stored.unique().tolist()) <= {-2.0, -1.0, 0.0, 1.0}
    assert not torch.equal(membrane["3"], fp32_membrane["3"])  # the quantizer changed what follows


@needs_quant
def test_quantized_and_pruned_tensor(tmp_path):
    model = _build("leaky_mlp")
    enc = _quantize(model, "2.weight", "int4")
    mask = enc.codes != enc.codes.flatten().mode().values
    get_state(model).masks["2.weight"] = mask
    path = save_compressed(model, tmp_path / "out.safetensors")
    assert read_metadata(path)["tensors"]["2.weight"]["mask"] is True
    loaded = load_model(str(path), trust_code=True)
    assert torch.equal(get_state(loaded).masks["2.weight"], mask)
    assert_same_activity(model, loaded, "leaky_mlp")


@needs_quant
def test_a_parameter_changed_after_quantization_is_refused(tmp_path):
    model = _build("leaky_mlp")
    _quantize(model, "0.weight", "pot4")
    with torch.no_grad():
        model[0].weight[0, 0] += 0.01
    with pytest.raises(DomainError, match="'0.weight' changed after it was quantized"):
        save_compressed(model, tmp_path / "out.safetensors")
    assert _files(tmp_path) == []


# -- output handling ----------------------------------------------------------------------------------------

def test_existing_output_is_not_overwritten_without_force(tmp_path):
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"keep me")
    with pytest.raises(InputError, match="exists; pass --force to overwrite it"):
        save_compressed(leaky_mlp(), target)
    assert target.read_bytes() == b"keep me"
    save_compressed(leaky_mlp(), target, force=True)
    assert is_compressed_file(target) and _files(tmp_path) == ["out.safetensors"]


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("snncompress.fileformat.compressed.save_deterministic", half_written)
    with pytest.raises(OutputError, match="cannot write .*out.safetensors: no space left on device"):
        save_compressed(leaky_mlp(), tmp_path / "out.safetensors")
    assert _files(tmp_path) == []
    (tmp_path / "out.safetensors").write_bytes(b"old")
    with pytest.raises(OutputError):
        save_compressed(leaky_mlp(), tmp_path / "out.safetensors", force=True)
    assert _files(tmp_path) == ["out.safetensors"]
    assert (tmp_path / "out.safetensors").read_bytes() == b"old"


def test_missing_output_folder(tmp_path):
    with pytest.raises(InputError, match="output folder .*absent does not exist"):
        save_compressed(leaky_mlp(), tmp_path / "absent" / "out.safetensors")


# -- damaged files ------------------------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path) -> Path:
    return save_compressed(_build("leaky_mlp"), tmp_path / "good.safetensors")


def _rewrite(src: Path, dst: Path, *, tensors=None, metadata=None, resign: bool = False) -> Path:
    """Copy ``src`` with edits; ``resign`` recomputes the digest, as a forger would, so that the checks behind
    it are reached."""
    with safe_open(str(src), framework="pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
        meta = dict(f.metadata())
    if tensors:
        tensors(stored)
    if metadata:
        metadata(meta)
    if resign:
        meta["sha256"] = content_digest(meta, stored)
    save_file(stored, str(dst), metadata=meta)
    return dst


def test_truncated_file(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20, 4):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(FileFormatError, match="not a readable safetensors file"):
            load_model(str(path))
        assert not is_compressed_file(path)


def test_corrupted_header(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    data[8:9] = b"#"  # the JSON header's opening brace
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="truncated or corrupted"):
        load_model(str(path))


@pytest.mark.parametrize("edit,error,match", [
    (lambda m: m.update(format_version="99"), FileFormatError, "format version 99 is newer.*upgrade"),
    (lambda m: m.update(tensors="{not json"), FileFormatError, "corrupted header"),
    (lambda m: m.pop("format"), FileFormatError, "plain safetensors file"),
    (lambda m: m.update(format_version="one"), FileFormatError, r"corrupted header \(format_version 'one'\)"),
    (lambda m: m.pop("model"), FileFormatError, r"corrupted header \(no model\)"),
    (lambda m: m.pop("history"), FileFormatError, r"corrupted header \(no history\)"),
    (lambda m: m.update(model=json.dumps({"kind": "sequential"})), FileFormatError, "lacks its architecture"),
    (lambda m: m.update(model=json.dumps({"kind": "teleport"})), FileFormatError,
     r"model.kind: Input should be 'sequential' or 'factory'"),
])
def test_bad_header_fields(saved, tmp_path, edit, error, match):
    path = _rewrite(saved, tmp_path / "bad.safetensors", metadata=edit)
    with pytest.raises(error, match=match):
        load_model(str(path))


def _edit_spec(name: str, **changes):
    def edit(meta):
        specs = json.loads(meta["tensors"])
        specs[name].update(changes)
        meta["tensors"] = json.dumps(specs)

    return edit


@pytest.mark.parametrize("tensors,metadata,match", [
    (lambda t: t.pop("2.weight"), None, "tensor '2.weight' is missing"),
    (lambda t: t.update({"0.bias": torch.zeros(5)}), None, r"'0.bias' has shape \[5\], header says \[12\]"),
    (None, _edit_spec("0.weight", kind="sparse"), r"tensors.0.weight.kind: Input should be 'dense', 'pruned'"),
    (None, _edit_spec("0.bias", dtype="float33"), r"corrupted header \(tensors.0.bias.dtype: Input should be"),
    (None, _edit_spec("0.weight", kind="pruned", mask=True), "a pruned tensor needs kept and mask"),
    (None, _edit_spec("0.weight", kind="pruned", mask=True, kept=3), "tensor '0.weight::mask' is missing"),
])
def test_tensors_that_do_not_match_the_header(saved, tmp_path, tensors, metadata, match):
    path = _rewrite(saved, tmp_path / "bad.safetensors", tensors=tensors, metadata=metadata)
    with pytest.raises(FileFormatError, match=match):
        load_model(str(path))


def test_nan_in_stored_weights(saved, tmp_path):
    def poison(t):
        t["2.weight"][0, 0] = float("nan")

    path = _rewrite(saved, tmp_path / "nan.safetensors", tensors=poison)
    with pytest.raises(FileFormatError, match="do not match its sha256 digest"):
        load_model(str(path))
    path = _rewrite(saved, tmp_path / "nan.safetensors", tensors=poison, resign=True)
    with pytest.raises(ModelLoadError, match="'2.weight' contains NaN or Inf"):
        load_model(str(path))


@needs_quant
def test_packed_codes_of_the_wrong_size(tmp_path):
    model = _build("leaky_mlp")
    _quantize(model, "0.weight", "pot4")
    good = save_compressed(model, tmp_path / "q.safetensors")
    path = _rewrite(good, tmp_path / "bad.safetensors",
                    tensors=lambda t: t.update({"0.weight::codes": t["0.weight::codes"][:-1].clone()}))
    with pytest.raises(FileFormatError, match=r"'0.weight::codes' has shape \[47\], header says \[48\]"):
        load_model(str(path))


def test_loading_does_not_modify_the_file(saved):
    before = saved.read_bytes()
    load_model(str(saved))
    read_metadata(saved)
    assert saved.read_bytes() == before


def test_history_figures_are_kept_at_six_digits_and_rounding_again_changes_nothing():
    value = {"a": 97.22222222222223, "b": [0.012261110672311254, 3, "x", float("inf")], "c": {"d": 1e-20 / 3}}
    once = rounded_figures(value)
    assert once == {"a": 97.2222, "b": [0.0122611, 3, "x", float("inf")], "c": {"d": 3.33333e-21}}
    assert rounded_figures(once) == once
