"""The deployment bundle: the integer-only program as JSON + one binary file, readable without Python.

A bundle is a folder with two files:

* ``program.json``: ``format`` (``"snncompress-integer-bundle"``), ``format_version`` (1), ``input``
  (``fraction_bits`` f: feed ``x_int = x * 2**f`` as integers; ``max_abs`` and ``time_steps``: the
  largest ``|x_int|`` and the most steps the program's int64 bounds were checked for), ``equations``
  (each op kind's integer step, the text of :mod:`snncompress.integer.program`), and ``ops``: one
  object per layer in execution order with its ``op`` (``synaptic``, ``pool``, ``reshape``,
  ``neuron``), ``name``, ``kind`` and its integer fields.
  A tensor field is ``{"offset": BYTES, "shape": [...], "dtype": "int64"}``.
* ``tensors.bin``: every tensor back to back, little-endian int64, C order (row-major), at the offsets
  ``program.json`` gives (multiples of 8).

Fields per op (``*``: a tensor):

* synaptic: ``weight*`` (integer levels, torch layout ``[out, in / groups, *kernel]``), ``multiplier*``
  and ``bias*`` (``[out]``), ``in_frac``, ``out_frac``, ``stride``, ``padding`` (zeros before each spatial
  dim, and after it unless ``padding_end`` gives the zeros after: ``padding="same"`` with an even kernel),
  ``dilation``, ``groups``;
  ``y = conv(a, weight) * multiplier[c] + bias[c]``.
* pool: ``kind`` (``max`` | ``sum``), ``dims``, ``kernel``, ``stride``, ``padding``, ``dilation``.
* reshape: ``kind`` (``flatten`` | ``identity``), ``start_dim``, ``end_dim`` (batch dim included).
* neuron: ``neuron`` (Leaky | Synaptic | RLeaky), ``mechanism``, ``frac`` (F), ``in_frac``, ``low``,
  ``high``, ``leak*``, ``threshold*``, ``reset*``, ``unit*`` (broadcast like numpy against the state
  ``[B, ...]``), Synaptic ``alpha_mult*`` and ``alpha_shift``, RLeaky ``rec_weight*`` / ``rec_bias*``
  (all-to-all) or ``rec_v*`` (one-to-one).

``snncompress verify MODEL --data D --bundle DIR`` runs a bundle against the torch model of MODEL.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from snncompress.errors import FileFormatError, InputError
from snncompress.integer import program as prog

BUNDLE_FORMAT = "snncompress-integer-bundle"
BUNDLE_VERSION = 1
_OPS = {"synaptic": prog.SynapticOp, "pool": prog.PoolOp, "reshape": prog.ReshapeOp, "neuron": prog.NeuronOp}
_TUPLES = {"stride", "padding", "dilation", "kernel", "padding_end"}


def _equations() -> str:
    doc = prog.__doc__ or ""
    body = doc.split("The ops, and the equations", 1)[-1].split("Every constant is exact", 1)[0]
    return body.split("runs:", 1)[-1].strip()


def program_to_json(program: prog.Program) -> tuple[dict[str, Any], bytes]:
    """The bundle's ``program.json`` content and ``tensors.bin`` bytes (same program, same bytes)."""
    blobs: list[bytes] = []
    offset = 0
    ops = []
    for op in program.ops:
        entry: dict[str, Any] = {}
        for f in fields(op):
            value = getattr(op, f.name)
            if isinstance(value, np.ndarray):
                data = np.ascontiguousarray(value, dtype="<i8").tobytes()
                entry[f.name] = {"offset": offset, "shape": list(value.shape), "dtype": "int64"}
                blobs.append(data)
                offset += len(data)
            elif isinstance(value, tuple):
                entry[f.name] = [int(v) for v in value]
            elif isinstance(value, np.integer):
                entry[f.name] = int(value)
            else:
                entry[f.name] = value
        ops.append(entry)
    doc = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "input": {"fraction_bits": program.input_frac, "max_abs": program.input_bound,
                  "time_steps": program.time_steps,
                  "dtype": "int64", "note": "x_int = x * 2**fraction_bits, exactly (checked by verify)"},
        "equations": _equations(),
        "ops": ops,
        "notes": program.notes,
    }
    return doc, b"".join(blobs)


def write_bundle(program: prog.Program, folder: str | Path, *, force: bool = False) -> Path:
    """Write ``program`` as a bundle folder, atomically (a folder beside it, then renamed).

    Raises:
        InputError: the folder exists and ``force`` is False, or it exists and is not a bundle.
    """
    folder = Path(folder)
    if folder.exists():
        if not force:
            raise InputError(f"{folder} exists; pass --force to overwrite it")
        if not (folder / "program.json").exists():
            raise InputError(f"{folder} exists and is not a bundle folder; refusing to overwrite it")
    doc, data = program_to_json(program)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary output folder
    try:
        (tmp / "program.json").write_text(json.dumps(doc, indent=1) + "\n")
        (tmp / "tensors.bin").write_bytes(data)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder


def read_bundle(folder: str | Path) -> prog.Program:
    """Read a bundle folder back into a program.

    Raises:
        FileFormatError: missing files, another format or version, or tensors outside ``tensors.bin``.
    """
    folder = Path(folder)
    try:
        doc = json.loads((folder / "program.json").read_text())
        data = (folder / "tensors.bin").read_bytes()
    except FileNotFoundError as exc:
        raise FileFormatError(f"{folder}: not a bundle folder ({Path(exc.filename).name} is missing)") from None
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{folder}/program.json: not JSON ({exc.msg})") from None
    if doc.get("format") != BUNDLE_FORMAT:
        raise FileFormatError(f"{folder}: not an snncompress integer bundle")
    if int(doc.get("format_version", 0)) > BUNDLE_VERSION:
        raise FileFormatError(f"{folder}: bundle version {doc['format_version']} is newer than this snncompress reads")
    try:
        ops = [_op(entry, data) for entry in doc["ops"]]
        return prog.Program(ops, int(doc["input"]["fraction_bits"]), int(doc["input"]["time_steps"]),
                            list(doc.get("notes", [])), int(doc["input"]["max_abs"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{folder}/program.json: corrupted entry ({exc})") from None


def _op(entry: dict[str, Any], data: bytes) -> Any:
    cls = _OPS[entry["op"]]
    kwargs = {}
    for f in fields(cls):
        if f.name not in entry:
            continue
        value = entry[f.name]
        if isinstance(value, dict) and "offset" in value:
            if value.get("dtype") != "int64":
                raise ValueError(f"{f.name}: dtype {value.get('dtype')}, expected int64")
            count = int(np.prod(value["shape"], dtype=np.int64))
            start = int(value["offset"])
            if start < 0 or start % 8 or start + 8 * count > len(data):
                raise ValueError(f"{f.name}: tensor outside tensors.bin")
            value = np.frombuffer(data, dtype="<i8", count=count, offset=start).astype(np.int64)
            value = value.reshape(entry[f.name]["shape"])
        elif f.name in _TUPLES and isinstance(value, list):
            value = tuple(int(v) for v in value)
        kwargs[f.name] = value
    return cls(**kwargs)
