"""NIR files: ``load_nir`` (read a ``.nir`` into a built-in Sequential) and ``export_nir`` (write one).

``load_model`` calls :func:`load_nir` for ``.nir`` paths. The conversion itself lives in
``nir_import`` (graph -> Sequential) and ``nir_export`` (Sequential -> graph).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nir
from torch import nn

from snncompress.errors import ModelLoadError
from snncompress.export.nir_export import export_nir
from snncompress.export.nir_import import NirReadOptions, graph_to_module, input_shape
from snncompress.state import get_state

__all__ = ["NirReadOptions", "export_nir", "load_nir", "read_nir"]


MAX_NIR_OBJECTS = 100_000


def check_self_contained(path: str | Path) -> None:
    """Refuse a NIR (HDF5) file that reads data from outside itself.

    HDF5 lets a dataset keep its bytes in other files (external storage), be a view of datasets in other
    files (a virtual dataset), or be a link into another file (an external link). Loading such a file
    would pull another local file's bytes into the model (and ``export`` would copy them out), so any of
    them is refused, as is a file that is not HDF5 at all.

    Raises:
        ModelLoadError: naming the first object that points outside the file.
    """
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError and others for non-HDF5 input
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: not a readable NIR graph (corrupted, truncated, or not NIR): {reason}") from exc
    with f:
        stack, seen = [f], 0
        while stack:
            group = stack.pop()
            for name in group:
                seen += 1
                if seen > MAX_NIR_OBJECTS:
                    raise ModelLoadError(f"{path}: more than {MAX_NIR_OBJECTS} HDF5 objects; not a NIR graph")
                link = group.get(name, getlink=True)
                where = f"{group.name.rstrip('/')}/{name}"
                if isinstance(link, h5py.ExternalLink):
                    raise ModelLoadError(f"{path}: '{where}' is a link into another file ({link.filename}); "
                                         "a NIR file must hold its own data")
                if isinstance(link, h5py.SoftLink):
                    continue  # points inside this file; its target is visited on its own
                item = group[name]
                if isinstance(item, h5py.Group):
                    stack.append(item)
                elif isinstance(item, h5py.Dataset):
                    if item.is_virtual:
                        raise ModelLoadError(f"{path}: dataset '{where}' is a virtual dataset (its data lives in "
                                             "other files); a NIR file must hold its own data")
                    if item.external:
                        raise ModelLoadError(f"{path}: dataset '{where}' keeps its data in an external file "
                                             f"({item.external[0][0]}); a NIR file must hold its own data")


def read_nir(path: str | Path) -> nir.NIRGraph:
    """Read a NIR graph file; graphs that fail NIR's type check are read again without it.

    Raises:
        ModelLoadError: not a NIR file (not HDF5, truncated, or not a NIR graph), naming the file.
    """
    path = Path(path)
    check_self_contained(path)
    try:
        graph = nir.read(path)
    except Exception:  # noqa: BLE001 - nir raises anything from h5py, asserts and ValueErrors
        try:
            graph = nir.read(path, type_check=False)  # e.g. older graphs with undefined shapes
        except Exception as exc:  # noqa: BLE001
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"{path}: not a readable NIR graph (corrupted, truncated, or not NIR): {reason}"
            ) from exc
    if not isinstance(graph, nir.NIRGraph):
        raise ModelLoadError(f"{path}: holds a single NIR {type(graph).__name__} node, not a graph")
    return graph


def load_nir(path: str | Path, options: NirReadOptions | None = None) -> nn.Module:
    """Load a chain-shaped NIR graph as an ``nn.Sequential`` of built-in layers (see ``nir_import``).

    Notes on assumed conventions are printed on stderr, one line each: one per node whose reading the
    graph leaves open (no dt, no reset recorded; ``options`` settles them), and folded gains.

    Raises:
        ModelLoadError: not a NIR file, or no single input/output.
        UnsupportedLayerError: a node without an snnTorch equivalent, or a graph that is not a chain
            (the message names the node and its type).
    """
    path = Path(path)
    graph = read_nir(path)
    model, notes = graph_to_module(graph, source=str(path), options=options)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    source = {"kind": "nir", "path": str(path)}
    shape = input_shape(graph)
    if shape is not None:
        shape = _per_step(shape, model, path)
        source["input_shape"] = shape
    get_state(model).source = source
    return model


_RANKS = {nn.Linear: 1, nn.Conv1d: 2, nn.Conv2d: 3}  # dims of one sample's step, without batch


def _per_step(shape: list[int], model: nn.Module, path: Path) -> list[int]:
    """The Input node's shape as one time step: some producers record leading time (or batch) dims,
    ``[T, C, H, W]`` before a Conv2d; the first layer says how many dims a step has."""
    first = next((m for m in model.modules() if type(m) in _RANKS or isinstance(m, nn.Flatten)), None)
    if isinstance(first, nn.Flatten):  # a step of any rank is flattened first: nothing says which dims are time
        return shape
    rank = _RANKS.get(type(first)) if first is not None else None
    if rank is None or len(shape) <= rank:
        return shape
    step = shape[-rank:]
    print(f"note: {path}: its Input records shape {shape}; one time step is {step} for the first layer "
          f"({type(first).__name__}), the leading dims are read as time (or batch)", file=sys.stderr)
    return step
