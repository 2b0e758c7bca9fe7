"""The snncompress compressed file: safetensors with packed low-bit codes and a JSON header.

Layout (format ``snncompress``, version 1):

* A float tensor that is not quantized is stored under its state-dict name as it is.
* A quantized tensor ``W`` is stored as ``W::codes`` (uint8, the codes packed densely, e.g. four
  2-bit codes per byte) plus one entry ``W::<param>`` per scheme parameter (scales, exponents).
* A pruning mask of ``W`` is stored as ``W::mask`` (8 entries per byte). A pruned float tensor
  keeps only its kept values, ``W::values``.
* ``__metadata__`` holds JSON strings: ``format``, ``format_version``, ``snncompress_version``,
  ``model`` (how to rebuild it: the architecture itself, or a factory reference), ``tensors``
  (each stored tensor's spec), ``neurons`` (neuron parameters and membrane quantizers),
  ``history`` (every pass with its config and metrics), ``baseline``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from snncompress import __version__
from snncompress.errors import DomainError, FileFormatError, ModelLoadError
from snncompress.fileformat.atomic import atomic_path, check_output_path
from snncompress.fileformat.packing import pack_codes, pack_mask, unpack_codes, unpack_mask
from snncompress.fileformat.safetensors_writer import save_deterministic
from snncompress.models.neurons import neuron_layers, neuron_params
from snncompress.state import get_state

FORMAT_NAME = "snncompress"
FORMAT_VERSION = 1
SEP = "::"
JSON_FIELDS = ("model", "tensors", "neurons", "history", "baseline")  # header entries holding JSON


def is_compressed_file(path: str | Path) -> bool:
    """True when ``path`` is a safetensors file written by snncompress."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        return False
    return meta.get("format") == FORMAT_NAME


def describe_source(model: nn.Module) -> dict[str, Any]:
    """How to rebuild ``model``: its architecture when it is a Sequential of known modules, else its factory."""
    from snncompress.models.layers import module_spec
    from snncompress.sim.runner import detect_style

    state = get_state(model)
    source = dict(state.source)
    if isinstance(model, nn.Sequential):
        try:
            return {**source, "kind": "sequential", "architecture": module_spec(model), "style": "stepwise"}
        except Exception as exc:  # falls back to the factory reference below
            reason = str(exc)
        else:
            reason = ""
    else:
        reason = f"{type(model).__name__} is a user module"
    if source.get("kind") == "factory" and source.get("factory"):
        return {**source, "style": source.get("style") or detect_style(model)}
    raise ModelLoadError(
        f"cannot record how to rebuild this model ({reason}); load it from a package.module:factory reference"
    )


def save_compressed(model: nn.Module, path: str | Path, *, force: bool = False) -> Path:
    """Write ``model`` and its compression state to ``path`` atomically.

    Raises:
        InputError: the output exists and ``force`` is False.
        DomainError: a quantized parameter changed after it was encoded.
    """
    path = check_output_path(path, force)
    state = get_state(model)
    tensors: dict[str, torch.Tensor] = {}
    specs: dict[str, Any] = {}
    for name, value in model.state_dict().items():
        value = value.detach().cpu()
        entry: dict[str, Any] = {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        mask = state.masks.get(name)
        enc = state.tensors.get(name)
        if enc is not None:
            scheme = _scheme_of(enc)
            decoded = scheme.decode(enc)
            if not torch.equal(decoded.to(value.dtype).reshape(value.shape), value):
                raise DomainError(
                    f"parameter '{name}' changed after it was quantized ({enc.scheme}); re-run the quantize pass"
                )
            tensors[name + SEP + "codes"] = pack_codes(enc.codes, enc.bits)
            for pname, pvalue in enc.params.items():
                tensors[f"{name}{SEP}{pname}"] = pvalue.detach().cpu().contiguous()
            entry.update(kind="quantized", scheme=enc.scheme, bits=enc.bits, params=sorted(enc.params))
        elif mask is not None:
            entry.update(kind="pruned", kept=int(mask.sum()))
            tensors[name + SEP + "values"] = value.reshape(-1)[mask.reshape(-1)].contiguous()
        else:
            entry.update(kind="dense")
            # a copy: state-dict entries may share storage (RLeaky's one-to-one ``V`` is also
            # ``recurrent.V``), and safetensors refuses to write shared tensors
            tensors[name] = value.clone(memory_format=torch.contiguous_format)
        if mask is not None:
            tensors[name + SEP + "mask"] = pack_mask(mask)
            entry["mask"] = True
        specs[name] = entry
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "snncompress_version": __version__,
        "model": json.dumps(describe_source(model)),
        "tensors": json.dumps(specs),
        "neurons": json.dumps(_neuron_metadata(model)),
        "history": json.dumps(state.history),
        "baseline": json.dumps(state.baseline),
    }
    with atomic_path(path) as tmp:
        save_deterministic(tensors, tmp, metadata)
    return path


def _neuron_metadata(model: nn.Module) -> dict[str, Any]:
    state = get_state(model)
    out = {}
    for name, module in neuron_layers(model):
        out[name] = {"params": neuron_params(module).to_dict(), **state.neurons.get(name, {})}
    return out


def _scheme_of(enc: Any):
    from snncompress.quant.schemes import scheme_from_dict

    return scheme_from_dict(enc.scheme)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The parsed header of a compressed file.

    Raises:
        FileFormatError: not a safetensors file, truncated, or not written by snncompress.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:
        raise FileFormatError(f"{path}: not a readable safetensors file (truncated or corrupted?)") from exc
    if raw.get("format") != FORMAT_NAME:
        raise FileFormatError(
            f"{path}: a plain safetensors file, not an snncompress model; pass a factory and use it as --weights"
        )
    try:
        version = int(raw.get("format_version", "0"))
    except ValueError:
        raise FileFormatError(f"{path}: corrupted header (format_version {raw['format_version']!r})") from None
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{path}: format version {version} is newer than this snncompress reads ({FORMAT_VERSION}); upgrade"
        )
    missing = [k for k in JSON_FIELDS if k not in raw]
    if missing:
        raise FileFormatError(f"{path}: corrupted header (no {', '.join(missing)})")
    try:
        return {k: (json.loads(v) if k in JSON_FIELDS else v) for k, v in raw.items()}
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: corrupted header ({exc.msg})") from exc


def load_compressed(path: str | Path) -> nn.Module:
    """Rebuild the model saved in ``path``; its outputs equal the saved model's bit for bit.

    Raises:
        FileFormatError: truncated, corrupted or unknown-version file.
        ModelLoadError: the model cannot be rebuilt.
    """
    from snncompress.models.membrane import reinstall_membrane_hooks
    from snncompress.quant.encoded import EncodedTensor

    meta = read_metadata(path)
    source = meta["model"]
    model = _rebuild(source)
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise FileFormatError(f"{path}: tensor data is truncated or corrupted") from exc
    state = get_state(model)
    state_dict: dict[str, torch.Tensor] = {}
    for name, spec in meta["tensors"].items():
        try:
            state_dict[name] = _decode_entry(name, spec, stored, state, EncodedTensor)
        except KeyError as exc:
            raise FileFormatError(f"{path}: tensor {exc} is missing") from exc
        except (TypeError, ValueError, AttributeError) as exc:  # e.g. an unknown dtype or a bad shape
            raise FileFormatError(f"{path}: corrupted header entry for tensor '{name}' ({exc})") from exc
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise FileFormatError(f"{path}: stored tensors do not fit the model: {str(exc).splitlines()[0]}") from exc
    state.source = source
    state.history = meta["history"]
    state.baseline = meta["baseline"]
    state.neurons = {k: {kk: vv for kk, vv in v.items() if kk != "params"} for k, v in meta["neurons"].items()}
    state.neurons = {k: v for k, v in state.neurons.items() if v}
    reinstall_membrane_hooks(model)
    model.eval()
    return model


def _decode_entry(name, spec, stored, state, encoded_cls) -> torch.Tensor:
    shape = tuple(spec["shape"])
    count = math.prod(shape)
    dtype = getattr(torch, spec.get("dtype", "float32"))
    mask = None
    if spec.get("mask"):
        mask = unpack_mask(stored[name + SEP + "mask"], shape)
        state.masks[name] = mask
    kind = spec["kind"]
    if kind == "quantized":
        codes = unpack_codes(stored[name + SEP + "codes"], spec["bits"], count).view(shape)
        codes = codes.to(torch.uint8 if spec["bits"] <= 8 else torch.int32)
        params = {p: stored[f"{name}{SEP}{p}"] for p in spec["params"]}
        enc = encoded_cls(codes=codes, bits=spec["bits"], params=params, scheme=spec["scheme"])
        state.tensors[name] = enc
        return _scheme_of(enc).decode(enc).to(dtype).reshape(shape)
    if kind == "pruned":
        values = stored[name + SEP + "values"]
        if mask is None or values.numel() != int(mask.sum()):
            raise FileFormatError(f"pruned tensor '{name}' does not match its mask")
        out = torch.zeros(count, dtype=values.dtype)
        out[mask.reshape(-1)] = values
        return out.view(shape)
    if kind == "dense":
        tensor = stored[name]
        if tuple(tensor.shape) != shape:
            raise FileFormatError(f"tensor '{name}' has shape {list(tensor.shape)}, header says {list(shape)}")
        return tensor
    raise FileFormatError(f"tensor '{name}' has unknown storage kind '{kind}'")


def _rebuild(source: dict[str, Any]) -> nn.Module:
    from snncompress.fileformat.loading import call_factory
    from snncompress.models.layers import build_module

    kind = source.get("kind")
    if kind == "sequential":
        if "architecture" not in source:
            raise FileFormatError("corrupted header: the model record lacks its architecture")
        model = build_module(source["architecture"])
    elif kind == "factory":
        model = call_factory(source["factory"])
    else:
        raise ModelLoadError(f"compressed file names an unknown model source '{kind}'")
    get_state(model).source = source
    return model
