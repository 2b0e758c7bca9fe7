"""Fuzzing the compressed-file loader (issue 10).

Valid files of tiny models (dense; quantized, pruned and with a quantized membrane) are mutated: header
values (any JSON value at any path of any JSON field), header structure (fields dropped, added, replaced,
cut), tensor bytes, dtypes and shapes, raw bytes anywhere in the file, truncation. One or two mutations
per example. Every mutant must either load to a model exactly equal to the original (state dict, dtypes,
compression state, architecture) or raise a snncompress error; no other exception, no hang (each load
runs under a 10 s alarm).

A second run re-signs every mutant (recomputes its digest), as someone crafting a malicious file would:
then any model may load (and be summarized, as ``inspect`` does), but still nothing but a snncompress
error may escape. That reaches the schema, layout, size and code-range checks behind the digest.
"""

from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snncompress.errors import SnnCompressError
from snncompress.fileformat.compressed import content_digest, load_compressed, save_compressed
from snncompress.fileformat.safetensors_writer import save_deterministic
from snncompress.models.layers import module_spec
from snncompress.models.membrane import install_membrane_quantizer
from snncompress.quant.membrane import MembraneQuantizer
from snncompress.quant.schemes import parse_weight_scheme
from snncompress.sim.summary import summarize
from snncompress.state import get_state
from tests.fileformat.forge import read_raw
from tests.models import leaky_mlp

# examples per test (four tests); 200 take about 5 s each here. SNNCOMPRESS_FUZZ_EXAMPLES=5000 for a long run.
EXAMPLES = int(os.environ.get("SNNCOMPRESS_FUZZ_EXAMPLES", "200"))
ALARM_S = 10


def _dense() -> torch.nn.Module:
    return leaky_mlp()


def _compressed() -> torch.nn.Module:
    """Quantized (pot4, ternary, int3), pruned (a quantized and a dense tensor) and a ternary membrane."""
    model = leaky_mlp()
    state = get_state(model)
    masks = {"2.weight": torch.arange(4)[:, None] != torch.arange(12)[None, :] % 4,
             "2.bias": torch.tensor([True, False, True, True])}
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_parameter(name).mul_(mask)
            state.masks[name] = mask
    for name, spec in (("0.weight", "pot4"), ("0.bias", "ternary"), ("2.weight", "int3")):
        scheme = parse_weight_scheme(spec)
        param = model.get_parameter(name)
        enc = scheme.encode(param.detach())
        with torch.no_grad():
            param.copy_(scheme.decode(enc))
        state.tensors[name] = enc
    install_membrane_quantizer(model, "1", MembraneQuantizer.ternary())
    state.history.append({"pass": "quantize", "config": {"weight_quant": "pot4"}, "metrics": {"a": [1, {"b": 2}]}})
    state.baseline = {"model": "leaky", "accuracy": 50.0, "data": "digits", "time_steps": 3}
    return model


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, tuple[bytes, dict[str, Any]]]:
    folder = tmp_path_factory.mktemp("fuzz-originals")
    out = {}
    for name, build in (("dense", _dense), ("compressed", _compressed)):
        path = save_compressed(build(), folder / f"{name}.safetensors")
        out[name] = (path.read_bytes(), _fingerprint(load_compressed(path)))
    return out


def _fingerprint(model: torch.nn.Module) -> dict[str, Any]:
    """Everything a load produces that a wrong load could change."""
    state = get_state(model)
    return {
        "architecture": module_spec(model),
        "tensors": {k: (v.dtype, v.shape, v.clone()) for k, v in model.state_dict().items()},
        "codes": {k: (e.codes.clone(), e.bits, json.dumps(e.scheme, sort_keys=True),
                      {p: t.clone() for p, t in e.params.items()}) for k, e in state.tensors.items()},
        "masks": {k: m.clone() for k, m in state.masks.items()},
        "json": json.dumps([state.source, state.history, state.baseline, state.neurons], sort_keys=True),
        "hooks": sorted(state.hooks),
    }


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype and \
            a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and \
            all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- mutations ---------------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, -1, 2, 3, 8, 255, 256, 2**31])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.sampled_from(["float32", "int32", "uint8", "dense", "pruned", "quantized", "Linear", "Leaky",
                       "Sequential", "factory", "sequential", "os:system", "tests.models:leaky_mlp"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(root: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = root
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return root


@st.composite
def mutation(draw, meta: dict[str, str], stored: dict[str, torch.Tensor]):
    """One edit of (meta, stored), or of the raw bytes ('raw', fn)."""
    kind = draw(st.sampled_from(["json_value", "json_value", "json_value", "json_delete", "json_insert",
                                 "field_replace", "field_drop", "field_add", "field_cut",
                                 "tensor_bytes", "tensor_dtype", "tensor_shape", "tensor_drop", "tensor_add",
                                 "byte_flip", "byte_flip", "truncate"]))
    json_fields = sorted(k for k in meta if k in ("model", "tensors", "neurons", "history", "baseline"))
    if kind in ("json_value", "json_delete", "json_insert"):
        field = draw(st.sampled_from(json_fields))
        value = json.loads(meta[field])
        paths = _paths(value)
        path = draw(st.sampled_from(paths[1:] if kind == "json_delete" and len(paths) > 1 else paths))
        if kind == "json_insert":
            target = value
            for key in path:
                target = target[key]
            if isinstance(target, dict):
                target[draw(st.text(max_size=6))] = draw(JSON_VALUES)
            elif isinstance(target, list):
                target.insert(draw(st.integers(0, len(target))), draw(JSON_VALUES))
            else:
                value = _set(value, path, draw(JSON_VALUES), False)
        else:
            value = _set(value, path, draw(JSON_VALUES), kind == "json_delete" and bool(path))
        return ("meta", field, json.dumps(value, allow_nan=True))
    if kind == "field_replace":
        field = draw(st.sampled_from(sorted(meta)))
        return ("meta", field, draw(st.text(max_size=20) | JSON_VALUES.map(json.dumps)))
    if kind == "field_drop":
        return ("meta", draw(st.sampled_from(sorted(meta))), None)
    if kind == "field_add":
        return ("meta", draw(st.text(min_size=1, max_size=8)), draw(st.text(max_size=8)))
    if kind == "field_cut":
        field = draw(st.sampled_from(sorted(meta)))
        return ("meta", field, meta[field][: draw(st.integers(0, max(len(meta[field]) - 1, 0)))])
    names = sorted(stored)
    if kind == "tensor_bytes":
        name = draw(st.sampled_from(names))
        t = stored[name]
        raw = bytearray(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        if raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        return ("tensor", name, torch.frombuffer(raw, dtype=torch.uint8).clone().view(t.dtype).reshape(t.shape)
                if raw else t)
    if kind == "tensor_dtype":
        name = draw(st.sampled_from(names))
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int32, torch.uint8, torch.int64,
                                      torch.float16, torch.bool]))
        return ("tensor", name, stored[name].to(dtype))
    if kind == "tensor_shape":
        name = draw(st.sampled_from(names))
        t = stored[name].reshape(-1)
        n = draw(st.integers(0, t.numel() + 3))
        return ("tensor", name, torch.cat([t, t.new_zeros(3)])[:n].clone())
    if kind == "tensor_drop":
        return ("tensor", draw(st.sampled_from(names)), None)
    if kind == "tensor_add":
        name = draw(st.sampled_from([*names, "x", "0.weight::extra"])) + draw(st.sampled_from(["", "::mask"]))
        return ("tensor", name, torch.zeros(draw(st.integers(0, 8)), dtype=torch.uint8))
    if kind == "byte_flip":
        return ("raw", "flip", (draw(st.floats(0, 1, exclude_max=True)), draw(st.integers(1, 255))))
    return ("raw", "truncate", draw(st.floats(0, 1, exclude_max=True)))


def _apply(original: bytes, folder: Path, edits: list, resign: bool) -> Path:
    src = folder / "src.safetensors"
    src.write_bytes(original)
    meta, stored = read_raw(src)
    raw_edits = [e for e in edits if e[0] == "raw"]
    for where, key, value in (e for e in edits if e[0] != "raw"):
        target = meta if where == "meta" else stored
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    if resign and "sha256" in meta:
        meta["sha256"] = content_digest(meta, stored)
    path = folder / "mutant.safetensors"
    try:
        save_deterministic(stored, path, meta)
    except ValueError:  # a dtype the writer does not know: keep the original container
        path.write_bytes(original)
    data = bytearray(path.read_bytes())
    for _, what, arg in raw_edits:
        if what == "flip":
            if not data:
                continue  # an earlier edit truncated the file to nothing
            position, xor = arg
            data[int(position * len(data))] ^= xor
        else:
            data = data[: int(arg * len(data))]
    path.write_bytes(bytes(data))
    return path


class Hang(Exception):
    pass


def _alarm(_signum, _frame):
    raise Hang(f"a load took more than {ALARM_S} s")


def _load_or_refuse(path: Path):
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_S)
    try:
        return load_compressed(path)
    except SnnCompressError:
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _header_bytes_only(original: bytes) -> int:
    (n,) = struct.unpack("<Q", original[:8])
    return 8 + n


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@pytest.mark.parametrize("which", ["dense", "compressed"])
@FUZZ
@given(data=st.data())
def test_mutants_load_exactly_or_fail_with_a_snncompress_error(originals, tmp_path, which, data):
    original, fingerprint = originals[which]
    meta, stored = read_raw(_write(tmp_path, original))
    edits = data.draw(st.lists(mutation(meta, stored), min_size=1, max_size=2))
    model = _load_or_refuse(_apply(original, tmp_path, edits, resign=False))
    if model is not None:
        assert _equal(_fingerprint(model), fingerprint), f"a mutant loaded as another model: {edits}"


@pytest.mark.parametrize("which", ["dense", "compressed"])
@FUZZ
@given(data=st.data())
def test_resigned_mutants_load_or_fail_with_a_snncompress_error(originals, tmp_path, which, data):
    original, _ = originals[which]
    meta, stored = read_raw(_write(tmp_path, original))
    edits = data.draw(st.lists(mutation(meta, stored), min_size=1, max_size=2))
    model = _load_or_refuse(_apply(original, tmp_path, edits, resign=True))  # any other exception fails
    if model is not None:
        try:
            summarize(model)  # what `inspect` shows of it, from the loaded header
        except SnnCompressError:
            pass


def _write(folder: Path, original: bytes) -> Path:
    path = folder / "orig.safetensors"
    path.write_bytes(original)
    return path
