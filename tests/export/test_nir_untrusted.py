"""A .nir file must hold its own data: HDF5 external storage, virtual datasets and external links are
refused (issue 10), and a self-contained file still loads."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from snncompress.errors import ModelLoadError
from snncompress.export.nir_export import export_nir
from snncompress.fileformat.loading import load_model
from tests.models import leaky_mlp


@pytest.fixture
def nir_file(tmp_path):
    path = tmp_path / "net.nir"
    export_nir(leaky_mlp(), path, torch.rand(8, generator=torch.Generator().manual_seed(0)))
    return path


def _weight_dataset(f: h5py.File) -> str:
    found = []
    f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and
                 name.endswith("weight") and obj.ndim == 2 else None)
    return found[0]


def test_a_self_contained_file_loads(nir_file):
    assert len(load_model(str(nir_file))) == 4


def test_external_storage_is_refused(nir_file, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(96, dtype=np.float32).tobytes())
    with h5py.File(nir_file, "a") as f:
        name = _weight_dataset(f)
        shape = f[name].shape
        del f[name]
        f.create_dataset(name, shape=shape, dtype="<f4", external=[(str(secret), 0, 96 * 4)])
    with pytest.raises(ModelLoadError, match=r"keeps its data in an external file .*secret.bin"):
        load_model(str(nir_file))


def test_a_virtual_dataset_is_refused(nir_file, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as g:
        g["data"] = np.ones((12, 8), dtype=np.float32)
    with h5py.File(nir_file, "a") as f:
        name = _weight_dataset(f)
        del f[name]
        layout = h5py.VirtualLayout(shape=(12, 8), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(other), "data", shape=(12, 8))
        f.create_virtual_dataset(name, layout)
    with pytest.raises(ModelLoadError, match="is a virtual dataset"):
        load_model(str(nir_file))


def test_an_external_link_is_refused(nir_file, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as g:
        g["data"] = np.ones((12, 8), dtype=np.float32)
    with h5py.File(nir_file, "a") as f:
        name = _weight_dataset(f)
        del f[name]
        f[name] = h5py.ExternalLink(str(other), "data")
    with pytest.raises(ModelLoadError, match="is a link into another file"):
        load_model(str(nir_file))


def test_export_refuses_such_a_file_too(nir_file, tmp_path, capsys):
    from tests.cli.support import assert_input_error

    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(96 * 4))
    with h5py.File(nir_file, "a") as f:
        name = _weight_dataset(f)
        del f[name]
        f.create_dataset(name, shape=(12, 8), dtype="<f4", external=[(str(secret), 0, 96 * 4)])
    assert_input_error(capsys, "export", nir_file, "-o", tmp_path / "copy.nir", match="external file")
    assert not (tmp_path / "copy.nir").exists()
