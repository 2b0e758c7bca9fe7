"""``load_model``: factories with weights, pickles, the demo model, and every way loading must fail."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from snncompress.errors import FileFormatError, ModelLoadError, UnsupportedLayerError
from snncompress.fileformat.loading import load_model
from snncompress.sim.runner import SNNRunner
from snncompress.state import get_state
from tests.models import TINY_MODELS, UNSUPPORTED, T, leaky_mlp, picklable, tutorial_net


def _outputs(model: nn.Module, name: str):
    tm = TINY_MODELS[name]
    with torch.no_grad():
        return SNNRunner(model).run(tm.example_inputs(), is_sequence=tm.is_sequence, time_steps=T)


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_factory_reference_loads_in_eval_mode_with_its_source(name):
    model = load_model(f"tests.models:{name}")
    assert not model.training
    assert get_state(model).source == {"kind": "factory", "factory": f"tests.models:{name}"}
    reference = _outputs(TINY_MODELS[name].build(), name)
    assert torch.equal(_outputs(model, name).spikes, reference.spikes)


def _halved(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v * 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("filename", ["weights.safetensors", "weights.pt", "weights.pth"])
@pytest.mark.parametrize("name", ["leaky_mlp", "rleaky_mlp", "conv2d_net", "tutorial_net"])
def test_weights_file_is_loaded_into_the_factory_model(name, filename, saved_weights):
    expected = _halved(TINY_MODELS[name].build())
    path = saved_weights(expected, filename)
    before = path.read_bytes()
    model = load_model(f"tests.models:{name}", weights=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert path.read_bytes() == before  # inputs are never modified


def test_pt_checkpoint_with_a_state_dict_entry(saved_weights):
    expected = _halved(leaky_mlp())
    path = saved_weights({"state_dict": expected}, "ckpt.pt")
    model = load_model("tests.models:leaky_mlp", weights=str(path))
    assert torch.equal(model.state_dict()["0.weight"], expected["0.weight"])


def test_pt_weights_are_read_with_weights_only(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(picklable(leaky_mlp()), path)  # a pickled module, not a state dict
    with pytest.raises(ModelLoadError, match="weights_only=True.*save model.state_dict"):
        load_model("tests.models:leaky_mlp", weights=path)


def test_state_dict_that_does_not_fit_names_missing_unexpected_and_mismatched_keys(saved_weights):
    sd = leaky_mlp().state_dict()
    del sd["2.bias"]
    sd["9.weight"] = torch.zeros(2)
    sd["0.weight"] = torch.zeros(3, 8)
    path = saved_weights(sd)
    with pytest.raises(ModelLoadError) as info:
        load_model("tests.models:leaky_mlp", weights=path)
    message = str(info.value)
    assert "missing keys: 2.bias" in message
    assert "unexpected keys: 9.weight" in message
    assert "shape mismatch: 0.weight [3, 8] vs model [12, 8]" in message
    assert "\n" not in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_in_weights_is_named(bad, saved_weights):
    sd = leaky_mlp().state_dict()
    sd["2.weight"][1, 3] = bad
    with pytest.raises(ModelLoadError, match="'2.weight' contains NaN or Inf"):
        load_model("tests.models:leaky_mlp", weights=saved_weights(sd))


def test_weights_errors(tmp_path, saved_weights):
    with pytest.raises(ModelLoadError, match="weights file not found"):
        load_model("tests.models:leaky_mlp", weights=tmp_path / "absent.safetensors")
    (tmp_path / "w.bin").write_bytes(b"\0" * 16)
    # any suffix is read as torch.save wrote it (NeuroBench ships weights without one); zeros are not
    with pytest.raises(ModelLoadError, match=r"w.bin: cannot read as a state dict with weights_only=True \(not a file "
                                             "torch.save wrote\)"):
        load_model("tests.models:leaky_mlp", weights=tmp_path / "w.bin")
    (tmp_path / "broken.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{\"a\":")
    with pytest.raises(FileFormatError, match="not a readable safetensors file"):
        load_model("tests.models:leaky_mlp", weights=tmp_path / "broken.safetensors")
    path = saved_weights({"x": torch.zeros(1), "meta": "text"}, "mixed.pt")
    with pytest.raises(ModelLoadError, match="does not hold a state dict of tensors"):
        load_model("tests.models:leaky_mlp", weights=path)


def test_pickled_module_is_refused_without_trust_pickle(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(picklable(tutorial_net()), path)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path))
    message = str(info.value)
    assert "pickled module" in message and "runs arbitrary code" in message
    assert "--trust-pickle" in message and "--weights" in message


@pytest.mark.parametrize("name", ["leaky_mlp", "tutorial_net"])
def test_pickled_module_loads_with_trust_pickle(name, tmp_path):
    original = TINY_MODELS[name].build()
    path = tmp_path / "model.pt"
    torch.save(picklable(original), path)
    model = load_model(str(path), trust_pickle=True)
    assert type(model) is type(original) and not model.training
    assert torch.equal(_outputs(model, name).membrane, _outputs(original, name).membrane)


def test_a_state_dict_given_as_the_model_points_to_weights(saved_weights):
    path = saved_weights(leaky_mlp().state_dict(), "sd.pt")
    with pytest.raises(ModelLoadError, match=r"holds a state dict, not a model; load it as .*--weights"):
        load_model(str(path), trust_pickle=True)


@pytest.mark.parametrize("factory", sorted(UNSUPPORTED))
def test_unsupported_layer_is_named(factory):
    layer, kind = UNSUPPORTED[factory]
    with pytest.raises(UnsupportedLayerError, match=rf"layer '{layer}'.*{kind}"):
        load_model(f"tests.models:{factory}")


def test_model_without_spiking_neurons_is_refused():
    with pytest.raises(ModelLoadError, match="has no snnTorch spiking neurons"):
        load_model("tests.models:no_neuron_net")


@pytest.mark.parametrize("spec,match", [
    ("tests.models:not_a_module", "returned str, not a torch nn.Module"),
    ("tests.models:failing_factory", "failing_factory failed: ValueError: checkpoint layout changed$"),
    ("tests.models:absent_factory", "module 'tests.models' has no attribute 'absent_factory'"),
    ("tests.no_such_module:build", "cannot import 'tests.no_such_module'"),
    ("nowhere.txt", "model not found: 'nowhere.txt'"),
    ("nowhere.safetensors", "model file not found: nowhere.safetensors"),
    ("nowhere.pt", "model file not found"),
    ("nowhere.nir", "model file not found"),
])
def test_bad_model_references(spec, match, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=match):
        load_model(spec)


def test_unknown_file_type_and_directory(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelLoadError, match=r"unknown model file type '\.onnx'"):
        load_model(str(tmp_path / "model.onnx"))
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(ModelLoadError, match="is a directory"):
        load_model(str(tmp_path / "dir.safetensors"))


def test_weights_with_a_model_file_is_refused(tmp_path, saved_weights):
    path = tmp_path / "model.pt"
    torch.save(picklable(leaky_mlp()), path)
    with pytest.raises(ModelLoadError, match="--weights applies to a package.module:factory model"):
        load_model(str(path), weights=saved_weights(leaky_mlp().state_dict()), trust_pickle=True)


def test_plain_safetensors_as_model_says_to_use_it_as_weights(saved_weights):
    path = saved_weights(leaky_mlp().state_dict())
    with pytest.raises(FileFormatError, match="plain safetensors file.*--weights"):
        load_model(str(path))


def test_demo_model_loads_the_shipped_weights():
    model = load_model("demo")
    assert [type(m).__name__ for m in model][:3] == ["Conv2d", "Leaky", "MaxPool2d"]
    assert sum(p.numel() for p in model.parameters()) == 160 + 4640 + 8256 + 650
    assert not model.training


def test_a_registered_loader_reads_another_format(tmp_path):
    """Model loaders are an extension point: a plugin's suffix goes through the same checks as any model."""
    import json

    from snncompress.errors import ModelLoadError
    from snncompress.fileformat.loading import load_model, register_loader, unregister_loader
    from tests.models import leaky_mlp

    def load_tiny(path):
        spec = json.loads(path.read_text())
        if spec["arch"] != "leaky_mlp":
            raise KeyError(spec["arch"])
        return leaky_mlp()

    good, bad = tmp_path / "net.tiny", tmp_path / "other.tiny"
    good.write_text(json.dumps({"arch": "leaky_mlp"}))
    bad.write_text(json.dumps({"arch": "resnet"}))
    with pytest.raises(ModelLoadError, match="unknown model file type '.tiny'"):
        load_model(str(good))
    register_loader(".tiny", load_tiny)
    try:
        model = load_model(str(good))
        assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in leaky_mlp().parameters())
        with pytest.raises(ModelLoadError, match=r"the '.tiny' loader failed: KeyError"):
            load_model(str(bad))
        with pytest.raises(ValueError, match="already registered"):
            register_loader(".tiny", load_tiny)
        with pytest.raises(ValueError, match="loaded by snncompress itself"):
            register_loader(".nir", load_tiny)
    finally:
        unregister_loader(".tiny")
