"""NIR files that readers pinned to nir 1.0.4 (Norse's and sinabs's importers) can load.

nir >= 1.0.5 writes ``v_reset`` on LIF, IF and CubaLIF nodes, and ``metadata`` (and input/output types)
on every node; nir 1.0.4 reads a node by calling its class with every key of the stored group, so any
key its dataclass lacks fails (``unexpected keyword argument 'v_reset'``). With ``compat`` the file is
rewritten after ``nir.write``: each node keeps only the keys nir 1.0.4's class takes (the table below is
read off nir 1.0.4's dataclasses), and ``v_reset`` is left out where it is 0 (NIR's default; a non-zero
reset potential has no 1.0.4 form, so such a file is refused). Neuron nodes keep their metadata (nir
1.0.4 takes it there), so snncompress's own reset semantics survive; Conv2d, Linear, Input and Output
lose theirs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from snncompress.errors import UnsupportedLayerError

# keys of each node's group that nir 1.0.4 accepts (its dataclass fields; Input and Output store `shape`)
_TYPES = ("input_type", "output_type", "metadata")
NIR_1_0_4_KEYS: dict[str, frozenset[str]] = {
    "Affine": frozenset({"weight", "bias", *_TYPES}),
    "Linear": frozenset({"weight"}),
    "Conv1d": frozenset({"input_shape", "weight", "stride", "padding", "dilation", "groups", "bias", *_TYPES}),
    "Conv2d": frozenset({"input_shape", "weight", "stride", "padding", "dilation", "groups", "bias"}),
    "Flatten": frozenset({"start_dim", "end_dim", *_TYPES}),
    "SumPool2d": frozenset({"kernel_size", "stride", "padding", *_TYPES}),
    "AvgPool2d": frozenset({"kernel_size", "stride", "padding"}),
    "Threshold": frozenset({"threshold", *_TYPES}),
    "Scale": frozenset({"scale"}),
    "Input": frozenset({"shape"}),
    "Output": frozenset({"shape"}),
    "LIF": frozenset({"tau", "r", "v_leak", "v_threshold", *_TYPES}),
    "IF": frozenset({"r", "v_threshold", *_TYPES}),
    "CubaLIF": frozenset({"tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "w_in", *_TYPES}),
    "LI": frozenset({"tau", "r", "v_leak", *_TYPES}),
    "NIRGraph": frozenset({"nodes", "edges", *_TYPES}),
}


def nir_node(cls: type, **fields: Any) -> Any:
    """``cls(**fields)`` with only the fields the installed nir's class has.

    sinabs pins ``nir<=1.0.4``, so where it is installed nir's LIF, IF and CubaLIF take no ``v_reset`` and
    Linear, Conv2d and AvgPool2d no ``metadata``. ``v_reset`` is left out where it is 0 (NIR's default);
    a non-zero one is refused.

    Raises:
        UnsupportedLayerError: a non-zero ``v_reset`` the installed nir cannot hold.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    kept = {k: v for k, v in fields.items() if k in names}
    reset = fields.get("v_reset")
    if "v_reset" not in names and reset is not None and np.any(np.asarray(reset) != 0):
        raise UnsupportedLayerError(f"a {cls.__name__} node with a non-zero v_reset needs nir >= 1.0.5 "
                                    "(the installed nir has no v_reset)")
    return cls(**kept)


def make_compatible(path: str | Path) -> list[str]:
    """Rewrite the NIR file at ``path`` in place for nir 1.0.4 readers (module docstring).

    Returns:
        What was left out, one entry per kind (``"v_reset of LIF nodes (0 everywhere)"``).

    Raises:
        UnsupportedLayerError: a node type nir 1.0.4 lacks, or a non-zero ``v_reset``.
    """
    import h5py

    dropped: dict[str, set[str]] = {}

    def visit(group, where: str) -> None:
        kind = group["type"][()]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        allowed = NIR_1_0_4_KEYS.get(kind)
        if allowed is None:
            raise UnsupportedLayerError(f"NIR node '{where}' is a {kind}, which nir 1.0.4 readers do not know")
        for key in list(group.keys()):
            if key == "type" or key in allowed:
                continue
            if key == "v_reset" and np.any(np.asarray(group[key][()]) != 0):
                raise UnsupportedLayerError(
                    f"NIR node '{where}' ({kind}) has a non-zero v_reset, which nir 1.0.4 cannot hold"
                )
            del group[key]
            dropped.setdefault(key, set()).add(kind)
        if kind == "NIRGraph" and "nodes" in group:
            for name, child in group["nodes"].items():
                visit(child, f"{where}.{name}" if where else name)

    with h5py.File(path, "r+") as f:
        visit(f["node"], "")
    notes = []
    for key, kinds in sorted(dropped.items()):
        what = " (0 everywhere)" if key == "v_reset" else ""
        notes.append(f"{key} of {', '.join(sorted(kinds))} nodes{what}")
    return notes
