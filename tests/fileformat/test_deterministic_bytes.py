"""The same model and state give the same file, byte for byte, and safetensors reads it."""

import hashlib

import torch
from safetensors import safe_open

from snncompress.fileformat.compressed import load_compressed, save_compressed
from snncompress.fileformat.loading import load_model
from snncompress.fileformat.safetensors_writer import save_deterministic
from snncompress.quant import parse_weight_scheme
from snncompress.state import get_state


def _quantized_demo():
    model = load_model("demo")
    scheme = parse_weight_scheme("pot4")
    with torch.no_grad():
        enc = scheme.encode(model[0].weight)
        model[0].weight.copy_(scheme.decode(enc))
    get_state(model).tensors["0.weight"] = enc
    get_state(model).history.append({"pass": "test", "config": {"b": 2, "a": 1}})
    return model


def test_same_model_same_bytes(tmp_path):
    digests = []
    for name in ("a.safetensors", "b.safetensors"):
        save_compressed(_quantized_demo(), tmp_path / name)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    loaded = load_compressed(tmp_path / "a.safetensors")
    assert torch.equal(loaded[0].weight, _quantized_demo()[0].weight)


def test_writer_output_reads_back_with_safetensors(tmp_path):
    tensors = {"z": torch.arange(5, dtype=torch.int32), "a": torch.rand(3, 2),
               "m": torch.tensor([1, 255], dtype=torch.uint8),
               "e": torch.zeros(0)}
    path = tmp_path / "t.safetensors"
    save_deterministic(tensors, path, {"k": "v", "a": "b"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"k": "v", "a": "b"}
        assert sorted(f.keys()) == ["a", "e", "m", "z"]
        for key, value in tensors.items():
            assert torch.equal(f.get_tensor(key), value)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_len % 8 == 0


def test_ptq_with_the_default_calibration_writes_the_same_bytes_for_a_seed(capsys, tmp_path):
    """Issue 10: wall-clock seconds used to go into the history; timings belong in the run report."""
    import json

    from snncompress.fileformat.compressed import read_metadata
    from tests.cli.support import cli

    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.safetensors"
        code, _, err = cli(capsys, "quantize", "tests.models:leaky_mlp", "--data", "tests.models:static_dataset",
                           "-T", "3", "-o", out, "--weight-quant", "int4", "--calibration-samples", "8",
                           "--json", tmp_path / f"{name}.json", "--quiet")
        assert code == 0, err
        outs.append(out)
    history = read_metadata(outs[0])["history"]
    assert history[0]["metrics"]["calibration"]["method"] == "adaround"  # the default calibration ran
    assert "seconds" not in json.dumps(history)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert json.loads((tmp_path / "a.json").read_text())["seconds"]  # the run report keeps the timings
