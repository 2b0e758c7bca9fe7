"""Edit compressed files the way a damaged disk or a forger would, for the safety and fuzz tests.

``forge`` rewrites a file with edits to its header strings and tensors; with ``resign`` it recomputes the
digest, as someone crafting a malicious file would, so that the checks behind the digest are reached.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from snncompress.fileformat.compressed import content_digest
from snncompress.fileformat.safetensors_writer import save_deterministic


def read_raw(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}


def forge(src: Path, dst: Path, *, metadata: Callable[[dict], None] | None = None,
          tensors: Callable[[dict], None] | None = None, resign: bool = True) -> Path:
    """Copy ``src`` to ``dst`` with ``metadata(meta)`` and ``tensors(stored)`` applied in place."""
    meta, stored = read_raw(src)
    if tensors:
        tensors(stored)
    if metadata:
        metadata(meta)
    if resign and "sha256" in meta:
        meta["sha256"] = content_digest(meta, stored)
    save_deterministic(stored, dst, meta)
    return dst


def edit_json(field: str, edit: Callable[[object], object | None]) -> Callable[[dict], None]:
    """A metadata edit of one JSON field: ``edit(value)`` changes it in place or returns a replacement."""

    def apply(meta: dict) -> None:
        value = json.loads(meta[field])
        out = edit(value)
        meta[field] = json.dumps(value if out is None else out)

    return apply


def data_region(path: Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """The offset of the tensor data in the file and each tensor's ``[begin, end)`` within it."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    spans = {k: tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__"}
    return 8 + n, spans
