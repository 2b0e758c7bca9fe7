"""The snncompress compressed file: safetensors with packed low-bit codes and a JSON header.

Layout (format ``snncompress``, version 2):

* A float tensor that is not quantized is stored under its state-dict name as it is.
* A quantized tensor ``W`` is stored as ``W::codes`` (uint8, the codes packed densely, e.g. four
  2-bit codes per byte) plus one entry ``W::<param>`` per scheme parameter (scales, exponents).
* A pruning mask of ``W`` is stored as ``W::mask`` (8 entries per byte). A pruned float tensor
  keeps only its kept values, ``W::values``.
* ``__metadata__`` holds strings: ``format``, ``format_version``, ``snncompress_version``, and the
  JSON of ``model`` (how to rebuild it: the architecture itself, or a factory reference), ``tensors``
  (each stored tensor's spec), ``neurons`` (neuron parameters and membrane quantizers), ``history``
  (every pass with its config and metrics), ``baseline``; and ``sha256``, a digest over every other
  header field and every stored tensor (:func:`content_digest`).

Loading checks, in this order: the header against one schema (:mod:`snncompress.fileformat.header`);
the stored tensors' names, dtypes and shapes against the header; the digest; that rebuilding the model
needs no code, or that the caller allowed it; the layer sizes against the stored tensors; every code
against its scheme's levels; the rebuilt model's tensors against the header. A file that fails any
check is refused with one :class:`~snncompress.errors.FileFormatError` line; one that passes them all
loads bit for bit as it was saved.

Version 1 files (before the digest) still load, with a note that their data cannot be checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from snncompress import __version__
from snncompress.errors import DomainError, FileFormatError, SnnCompressError
from snncompress.fileformat.atomic import atomic_path, check_output_path
from snncompress.fileformat.header import (
    DIGEST_FIELD,
    FORMAT_NAME,
    FORMAT_VERSION,
    JSON_FIELDS,
    SAFETENSORS_DTYPES,
    Header,
    TensorSpec,
    check_allocation,
    parse_header,
)
from snncompress.fileformat.packing import pack_codes, pack_mask, packed_nbytes, unpack_codes, unpack_mask
from snncompress.fileformat.safetensors_writer import save_deterministic
from snncompress.models.neurons import neuron_layers, neuron_params
from snncompress.models.source import describe_source, rebuild
from snncompress.state import get_state

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "JSON_FIELDS", "SEP", "content_digest", "is_compressed_file",
           "load_compressed", "read_metadata", "save_compressed"]

SEP = "::"
PARAM_DTYPES = ("float32", "int32")  # what scheme parameters (scales, exponents, alpha) are stored as


def is_compressed_file(path: str | Path) -> bool:
    """True when ``path`` is a safetensors file written by snncompress."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        return False
    return meta.get("format") == FORMAT_NAME


def content_digest(metadata: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every header string but the digest itself, and every tensor's name, dtype, shape and bytes.

    Each piece is length-prefixed, so no two different files give the same byte stream.
    """
    h = hashlib.sha256()

    def feed(data: bytes) -> None:
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)

    for key in sorted(metadata):
        if key != DIGEST_FIELD:
            feed(key.encode())
            feed(str(metadata[key]).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        feed(name.encode())
        feed(str(t.dtype).removeprefix("torch.").encode())
        feed(json.dumps(list(t.shape)).encode())
        feed(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_compressed(model: nn.Module, path: str | Path, *, force: bool = False) -> Path:
    """Write ``model`` and its compression state to ``path`` atomically.

    Raises:
        InputError: the output exists and ``force`` is False (also when another process creates it first).
        OutputError: the output cannot be written (read-only folder, disk full); nothing is left behind.
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
            scheme = _scheme_of(enc.scheme)
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
        "model": _compact(describe_source(model)),
        "tensors": _compact(specs),
        "neurons": _compact(_neuron_metadata(model)),
        "history": _compact(rounded_figures(state.history)),
        "baseline": _compact(state.baseline),
    }
    metadata[DIGEST_FIELD] = content_digest(metadata, tensors)
    with atomic_path(path, replace=force) as tmp:
        save_deterministic(tensors, tmp, metadata)
    return path


def _compact(value: Any) -> str:
    """JSON without the spaces after separators: the header is part of the file size users weigh."""
    return json.dumps(value, separators=(",", ":"))


def rounded_figures(value: Any) -> Any:
    """The pass history's figures at 6 significant digits (they are read, not computed with; a float's 17
    digits were a third of a small model's header). Idempotent, so a loaded file saves to the same bytes."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded_figures(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded_figures(v) for v in value]
    return value


def _neuron_metadata(model: nn.Module) -> dict[str, Any]:
    state = get_state(model)
    out = {}
    for name, module in neuron_layers(model):
        out[name] = {"params": neuron_params(module).to_dict(), **state.neurons.get(name, {})}
    return out


def _scheme_of(scheme: dict[str, Any]):
    from snncompress.quant.schemes import scheme_from_dict

    return scheme_from_dict(scheme)


def _read_container(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[str, list[int]]]]:
    """The raw header strings and each stored tensor's (dtype, shape), without reading tensor data."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            layout = {}
            for key in f.keys():
                sl = f.get_slice(key)
                layout[key] = (SAFETENSORS_DTYPES.get(sl.get_dtype(), sl.get_dtype()), list(sl.get_shape()))
    except Exception as exc:  # the safetensors reader raises several kinds for a damaged container
        raise FileFormatError(f"{path}: not a readable safetensors file (truncated or corrupted?)") from exc
    return raw, layout


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The parsed, validated header of a compressed file (the JSON fields decoded).

    Raises:
        FileFormatError: not a safetensors file, truncated, not written by snncompress, or a header that
            fails the schema.
    """
    raw, _ = _read_container(path)
    header = parse_header(raw, str(path))
    return {**{k: v for k, v in raw.items() if k not in JSON_FIELDS}, **header.json_fields}


def load_compressed(path: str | Path, *, trust_code: bool = False, factory: str | None = None) -> nn.Module:
    """Rebuild the model saved in ``path``; its outputs equal the saved model's bit for bit.

    Args:
        path: the compressed file.
        trust_code: allow importing and calling the factory a file of a user module names (it runs that
            module's code). Files of built-in architectures need no code and load without it.
        factory: a ``package.module:factory`` the caller names to build the module, instead of the file's.

    Raises:
        FileFormatError: truncated, corrupted, tampered or unknown-version file; a header that fails the
            schema; tensors that do not match it.
        ModelLoadError: the model needs code that was not allowed, or cannot be rebuilt.
    """
    where = str(path)
    raw, layout = _read_container(path)
    header = parse_header(raw, where)
    _check_layout(header, layout, where)
    if factory is None and header.model.kind == "factory" and not trust_code:
        from snncompress.models.source import refuse_code

        raise refuse_code(header.model.factory or "?", where)
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise FileFormatError(f"{where}: tensor data is truncated or corrupted") from exc
    if header.version >= 2:
        if content_digest(raw, stored) != header.digest:
            raise FileFormatError(
                f"{where}: the file's contents do not match its {DIGEST_FIELD} digest (corrupted or edited)"
            )
    else:
        print(f"note: {where} is a format version 1 file, which has no digest: its data cannot be checked for "
              "corruption (save it again to upgrade it)", file=sys.stderr)
    if header.model.kind == "sequential" and factory is None:
        check_allocation(header, where)
    model = _build(header, trust_code, factory, where)
    _add_gates(model, header, where)
    state = get_state(model)
    state_dict = {name: _decode_entry(name, spec, stored, state, where) for name, spec in header.tensors.items()}
    _check_fits(model, header, where)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise FileFormatError(f"{where}: stored tensors do not fit the model: {str(exc).splitlines()[0]}") from exc
    fields = header.json_fields
    state.history = fields["history"]
    state.baseline = fields["baseline"]
    state.neurons = {k: {kk: vv for kk, vv in v.items() if kk != "params"} for k, v in fields["neurons"].items()}
    state.neurons = {k: v for k, v in state.neurons.items() if v}
    _install_membranes(model, where)
    model.eval()
    return model


def _expected_layout(spec: TensorSpec, name: str) -> dict[str, tuple[str | None, list[int] | None]]:
    """The stored entries of one state-dict tensor: name -> (dtype, shape); None where the spec leaves it open."""
    out: dict[str, tuple[str | None, list[int] | None]] = {}
    if spec.mask:
        out[name + SEP + "mask"] = ("uint8", [packed_nbytes(spec.count, 1)])
    if spec.kind == "dense":
        out[name] = (spec.dtype, list(spec.shape))
    elif spec.kind == "pruned":
        out[name + SEP + "values"] = (spec.dtype, [spec.kept])
    else:
        out[name + SEP + "codes"] = ("uint8", [packed_nbytes(spec.count, spec.bits)])
        for p in spec.params or []:
            out[f"{name}{SEP}{p}"] = (None, None)
    return out


def _check_layout(header: Header, layout: Mapping[str, tuple[str, list[int]]], where: str) -> None:
    """Every stored tensor is one the header names, with the dtype and shape it says (no data read yet)."""
    expected: dict[str, tuple[str | None, list[int] | None]] = {}
    for name, spec in header.tensors.items():
        expected.update(_expected_layout(spec, name))
    for key, (dtype, shape) in expected.items():
        if key not in layout:
            raise FileFormatError(f"{where}: tensor '{key}' is missing")
        got_dtype, got_shape = layout[key]
        if shape is not None and got_shape != shape:
            raise FileFormatError(f"{where}: tensor '{key}' has shape {got_shape}, header says {shape}")
        if dtype is not None and got_dtype != dtype:
            raise FileFormatError(f"{where}: tensor '{key}' is stored as {got_dtype}, header says {dtype}")
        if dtype is None:  # a scheme parameter: a small float32 or int32 tensor
            owner = header.tensors[key.split(SEP)[0]]
            if got_dtype not in PARAM_DTYPES or len(got_shape) > max(len(owner.shape), 1) or \
                    _prod(got_shape) > max(owner.count, 1):
                raise FileFormatError(f"{where}: scheme parameter '{key}' is {got_dtype} {got_shape}, which does "
                                      f"not fit a tensor of shape {owner.shape}")
    extra = sorted(set(layout) - set(expected))
    if extra:
        raise FileFormatError(f"{where}: tensor '{extra[0]}' is stored but the header does not describe it")


def _prod(shape: list[int]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _build(header: Header, trust_code: bool, factory: str | None, where: str) -> nn.Module:
    """Rebuild the module; an architecture was checked (types, sizes) so any failure here is the file's."""
    source = header.json_fields["model"]
    if header.model.kind == "factory" or factory is not None:
        return rebuild(source, trust_code=trust_code, factory=factory, where=where)
    try:
        return rebuild(source, where=where)
    except SnnCompressError as exc:
        raise FileFormatError(f"{where}: corrupted header (the architecture cannot be built: {exc})") from None
    except Exception as exc:  # the layer constructors reject bad arguments in many ways; sizes are bounded
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FileFormatError(
            f"{where}: corrupted header (the architecture cannot be built: {type(exc).__name__}: {first})"
        ) from None


def _decode_entry(name: str, spec: TensorSpec, stored: Mapping[str, torch.Tensor], state, where: str) -> torch.Tensor:
    from snncompress.quant.encoded import EncodedTensor

    shape = tuple(spec.shape)
    dtype = getattr(torch, spec.dtype)
    mask = None
    if spec.mask:
        mask = unpack_mask(stored[name + SEP + "mask"], shape)
        state.masks[name] = mask
    if spec.kind == "quantized":
        try:
            scheme = _scheme_of(spec.scheme)
        except SnnCompressError as exc:
            raise FileFormatError(f"{where}: tensor '{name}' names a bad scheme ({exc})") from None
        if scheme.is_identity or spec.bits != scheme.code_bits:
            raise FileFormatError(f"{where}: tensor '{name}' stores {spec.bits}-bit codes, but its scheme "
                                  f"{scheme.describe()} uses {scheme.code_bits}")
        _check_params(name, spec, scheme, stored, where)
        codes = unpack_codes(stored[name + SEP + "codes"], spec.bits, spec.count)
        bad = ~scheme.valid_codes(codes)
        if bool(bad.any()):
            raise FileFormatError(f"{where}: tensor '{name}' holds {int(bad.sum())} code(s) that name no level of "
                                  f"{scheme.describe()} (e.g. {int(codes[bad][0])})")
        codes = codes.view(shape).to(torch.uint8 if spec.bits <= 8 else torch.int32)
        params = {p: stored[f"{name}{SEP}{p}"] for p in spec.params or []}
        try:
            enc = EncodedTensor(codes=codes, bits=spec.bits, params=params, scheme=spec.scheme)
            decoded = scheme.decode(enc)
        except (SnnCompressError, RuntimeError, KeyError, TypeError, ValueError) as exc:
            # KeyError: a parameter the scheme needs is not listed; RuntimeError: a parameter that does not broadcast
            raise FileFormatError(f"{where}: tensor '{name}' cannot be decoded ({type(exc).__name__}: {exc})") from None
        if tuple(decoded.shape) != shape:
            raise FileFormatError(f"{where}: tensor '{name}' decodes to shape {list(decoded.shape)}, header says "
                                  f"{list(shape)} (its scheme parameters do not fit)")
        state.tensors[name] = enc
        return decoded.to(dtype)
    if spec.kind == "pruned":
        values = stored[name + SEP + "values"]
        if mask is None or values.numel() != int(mask.sum()):
            raise FileFormatError(f"{where}: pruned tensor '{name}' does not match its mask")
        out = torch.zeros(spec.count, dtype=values.dtype)
        out[mask.reshape(-1)] = values
        return out.view(shape)
    return stored[name]


def _check_params(name: str, spec: TensorSpec, scheme, stored: Mapping[str, torch.Tensor], where: str) -> None:
    """The scheme parameters are exactly those the scheme computes for a tensor of this shape: same names,
    dtypes and shapes (a per-tensor exponent stored per channel would otherwise broadcast silently)."""
    expected = scheme.grid_params(torch.zeros(spec.shape))
    if sorted(expected) != sorted(spec.params or []):
        raise FileFormatError(f"{where}: tensor '{name}' lists scheme parameters {spec.params}, its scheme "
                              f"{scheme.describe()} has {sorted(expected)}")
    for pname, want in expected.items():
        got = stored[f"{name}{SEP}{pname}"]
        if got.dtype != want.dtype or got.shape != want.shape:
            raise FileFormatError(
                f"{where}: scheme parameter '{name}{SEP}{pname}' is {str(got.dtype).removeprefix('torch.')} "
                f"{list(got.shape)}, {scheme.describe()} needs {str(want.dtype).removeprefix('torch.')} "
                f"{list(want.shape)}")


def _check_fits(model: nn.Module, header: Header, where: str) -> None:
    """The rebuilt model has exactly the header's tensors, with their shapes and dtypes (no silent casts)."""
    own = model.state_dict()
    for name in own:
        if name not in header.tensors:
            raise FileFormatError(f"{where}: the model's tensor '{name}' is not in the file")
    for name, spec in header.tensors.items():
        if name not in own:
            raise FileFormatError(f"{where}: tensor '{name}' is not part of the rebuilt model")
        have = own[name]
        if list(have.shape) != spec.shape:
            raise FileFormatError(f"{where}: tensor '{name}' is {spec.shape} in the file, {list(have.shape)} in "
                                  "the rebuilt model")
        if str(have.dtype).removeprefix("torch.") != spec.dtype:
            raise FileFormatError(f"{where}: tensor '{name}' is {spec.dtype} in the file, "
                                  f"{str(have.dtype).removeprefix('torch.')} in the rebuilt model")


def _add_gates(model: nn.Module, header: Header, where: str) -> None:
    """The channel gates' modules (models/channel_gate.py), so the file's gate tensors have a place to load."""
    from snncompress.models.channel_gate import add_gate_modules

    records = {k: v.model_dump() for k, v in header.neurons.items() if v.channel_gate is not None}
    if not records:
        return
    neurons = dict(neuron_layers(model))
    for layer in records:
        if layer not in neurons:
            raise FileFormatError(f"{where}: corrupted header (neurons names '{layer}', not a neuron layer)")
    try:
        add_gate_modules(model, records)
    except SnnCompressError as exc:
        raise FileFormatError(f"{where}: corrupted header ({exc})") from None


def _install_membranes(model: nn.Module, where: str) -> None:
    from snncompress.models.membrane import reinstall_membrane_hooks

    state = get_state(model)
    neurons = dict(neuron_layers(model))
    for layer, settings in state.neurons.items():
        if layer not in neurons:
            raise FileFormatError(f"{where}: corrupted header (neurons names '{layer}', not a neuron layer)")
        unit = settings.get("membrane_unit")
        if isinstance(unit, list):
            count = torch.tensor(unit, dtype=torch.float64).numel() if _regular(unit) else -1
            if count != neurons[layer].threshold.numel():
                raise FileFormatError(f"{where}: corrupted header (membrane unit of '{layer}' does not fit its "
                                      "threshold)")
    try:
        reinstall_membrane_hooks(model)
    except (SnnCompressError, ValueError, TypeError) as exc:
        raise FileFormatError(f"{where}: corrupted header (membrane quantizer: {exc})") from None


def _regular(value: Any) -> bool:
    """A nested list that makes a rectangular tensor."""
    try:
        torch.tensor(value, dtype=torch.float64)
    except (ValueError, TypeError, RuntimeError):
        return False
    return True
