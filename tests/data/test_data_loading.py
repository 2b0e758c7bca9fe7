"""``load_data``: the digits set, encodings, tensor files, user functions, and bad data."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from snncompress.data import DataOptions, load_data
from snncompress.data.loading import digits_split
from snncompress.errors import DataError
from snncompress.sim.evaluate import prepare
from tests.models import leaky_mlp, static_dataset


def test_digits_splits_sizes_and_values():
    train = load_data("digits:train", DataOptions())
    test = load_data("digits", DataOptions())  # the default split is test
    assert (len(train), len(test)) == (1257, 540)
    assert test.name == "digits:test" and train.name == "digits:train"
    assert train.num_classes == test.num_classes == 10
    x, y = test.dataset.tensors
    assert x.shape == (540, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [54, 55, 53, 55, 54, 55, 54, 54, 52, 54]  # stratified
    assert not test.is_sequence and test.time_steps == 8
    with pytest.raises(DataError, match="unknown digits split 'val'"):
        digits_split("val")


def test_digits_split_is_fixed_and_disjoint():
    x_a, y_a = digits_split("test")
    x_b, y_b = digits_split("test")
    assert torch.equal(x_a, x_b) and torch.equal(y_a, y_b)
    train = {tuple(row.tolist()) for row in digits_split("train")[0].reshape(-1, 64)}
    shared = sum(tuple(row.tolist()) in train for row in x_a.reshape(-1, 64))
    assert shared < 10  # a handful of identical images exist in the set; the split itself does not overlap


def test_split_option_and_limit():
    data = load_data("digits", DataOptions(split="train", limit=7, batch_size=3))
    assert data.name == "digits:train" and len(data) == 7
    assert [len(y) for _, y in data.loader()] == [3, 3, 1]
    assert torch.equal(data.dataset.tensors[0], digits_split("train")[0][:7])


def test_direct_encoding_keeps_static_samples():
    data = load_data("digits", DataOptions(time_steps=4, limit=5))
    assert not data.is_sequence and data.time_steps == 4
    assert data.sample_input().shape == (1, 8, 8)


def test_rate_encoding_is_seeded_bernoulli():
    opts = DataOptions(encoding="rate", time_steps=4, limit=20, seed=7)
    a = load_data("digits", opts)
    b = load_data("digits", opts)
    c = load_data("digits", DataOptions(encoding="rate", time_steps=4, limit=20, seed=8))
    x, _ = a.dataset.tensors
    static = digits_split("test")[0][:20]
    assert a.is_sequence and x.shape == (20, 4, 1, 8, 8)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(x, b.dataset.tensors[0])
    assert not torch.equal(x, c.dataset.tensors[0])
    # p = pixel intensity: a dark pixel never fires, a full one fires at every step
    per_step = x.transpose(0, 1)  # [T, N, 1, 8, 8]
    assert int((static == 0).sum()) > 0 and int((static == 1).sum()) > 0
    assert float(per_step[:, static == 0].sum()) == 0.0
    assert bool((per_step[:, static == 1] == 1).all())


@pytest.mark.parametrize("filename", ["set.safetensors", "set.npz", "set.pt"])
def test_tensor_files(filename, write_tensors):
    x = torch.rand(9, 3, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 0, 2, 1, 4, 0, 1], dtype=torch.int32)
    path = write_tensors(filename, x=x, y=y)
    data = load_data(str(path), DataOptions(batch_size=4, limit=8))
    got_x, got_y = data.dataset.tensors
    assert got_x.dtype == torch.float32 and got_y.dtype == torch.int64
    assert torch.equal(got_x, x[:8].float()) and torch.equal(got_y, y[:8].long())
    assert data.num_classes == 5 and len(data) == 8 and data.name == str(path)
    assert [len(b[1]) for b in data.loader()] == [4, 4]


def test_event_frames_are_detected_as_sequences(write_tensors):
    frames = (torch.rand(6, 5, 8, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    data = load_data(str(write_tensors("frames.safetensors", x=frames, y=torch.arange(6) % 4)),
                     DataOptions(time_steps=2))
    assert not data.is_sequence  # undecided until the model is known
    prepare(leaky_mlp(), data)
    assert data.is_sequence


@pytest.mark.parametrize("function", ["static_dataset", "static_loader"])
def test_user_function_returning_dataset_or_loader(function):
    data = load_data(f"tests.models:{function}", DataOptions(batch_size=4, limit=6, time_steps=2))
    assert len(data) == 6 and data.num_classes == 4 and not data.is_sequence
    expected_x, expected_y = static_dataset().tensors
    x, y = next(iter(data.loader()))
    assert torch.equal(x, expected_x[:4]) and torch.equal(y, expected_y[:4])
    assert isinstance(data.loader(), DataLoader) and data.loader().batch_size == 4
    assert load_data(f"tests.models:{function}", DataOptions(limit=100)).__len__() == 10


def test_shuffled_loader_is_seeded():
    data = load_data("digits", DataOptions(limit=40, batch_size=40, seed=3))
    a = next(iter(data.loader(shuffle=True)))[1]
    b = next(iter(data.loader(shuffle=True)))[1]
    c = next(iter(data.loader(shuffle=True, seed=4)))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(a.tolist()) == sorted(data.dataset.tensors[1].tolist())


@pytest.mark.parametrize("options,match", [
    (DataOptions(encoding="poisson"), "unknown encoding 'poisson'"),
    (DataOptions(time_steps=0), "--time-steps must be >= 1, got 0"),
    (DataOptions(batch_size=0), "--batch-size must be >= 1, got 0"),
    (DataOptions(limit=0), "--limit must be >= 1, got 0"),
])
def test_bad_options(options, match):
    with pytest.raises(DataError, match=match):
        load_data("digits", options)


@pytest.mark.parametrize("filename,tensors,match", [
    ("a.safetensors", {"y": torch.zeros(4, dtype=torch.long)}, r"expected tensor 'x' \(and 'y' for labels\), "
                                                               r"found \['y'\]"),
    ("b.npz", {"x": torch.rand(4, 3), "y": torch.zeros(5, dtype=torch.long)}, "x has 4 samples but y has 5"),
    ("c.pt", {"x": torch.rand(4), "y": torch.zeros(4, dtype=torch.long)}, "at least one feature dimension"),
    ("d.safetensors", {"x": torch.rand(4, 3), "y": torch.rand(4)}, "y must be a 1-D integer label tensor"),
    ("e.safetensors", {"x": torch.rand(4, 3), "y": torch.tensor([0, -1, 1, 0])},
     r"labels must be >= 0, found -1 \(leave 'y' out for unlabelled data\)"),
    ("f.npz", {"x": torch.tensor([[0.0, float("nan")]] * 2), "y": torch.zeros(2, dtype=torch.long)},
     "x contains NaN or Inf"),
])
def test_bad_tensor_files(filename, tensors, match, write_tensors):
    path = write_tensors(filename, **tensors)
    with pytest.raises(DataError, match=match):
        load_data(str(path))


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "cut.safetensors").write_bytes(b"\x40\0\0\0\0\0\0\0{")
    with pytest.raises(DataError, match="cannot read data file"):
        load_data(str(tmp_path / "cut.safetensors"))
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="unknown data file type '.csv'"):
        load_data(str(tmp_path / "x.csv"))
    with pytest.raises(DataError, match="data file not found"):
        load_data(str(tmp_path / "absent.npz"))
    with pytest.raises(DataError, match="unknown data source 'mnist'"):
        load_data("mnist")


@pytest.mark.parametrize("spec,match", [
    ("tests.models:not_a_dataset", "returned list; it must return a torch Dataset or DataLoader"),
    ("tests.models:no_such_function", "module 'tests.models' has no attribute 'no_such_function'"),
    ("tests.absent_module:data", "cannot import 'tests.absent_module' for data function"),
    ("tests.models:failing_dataset", "failing_dataset failed: FileNotFoundError: raw/ folder missing"),
])
def test_bad_user_functions(spec, match):
    with pytest.raises(DataError, match=match):
        load_data(spec)


def test_user_function_in_the_working_directory(tmp_path, monkeypatch):
    # the installed `snncompress` script does not put the working directory on sys.path; the CLI finds
    # the user's module there for a reference the user typed, and the library never edits sys.path
    from snncompress.cli.common import load_data_cli

    (tmp_path / "snnc_user_data_mod.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n\n"
        "def data():\n    return TensorDataset(torch.zeros(3, 8), torch.tensor([0, 1, 2]))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "snnc_user_data_mod", raising=False)
    before = list(sys.path)
    with pytest.raises(DataError, match="cannot import 'snnc_user_data_mod'"):
        load_data("snnc_user_data_mod:data")
    assert sys.path == before
    data = load_data_cli("snnc_user_data_mod:data", "direct", 4, 8, None, 0)
    assert len(data) == 3 and data.num_classes == 3
    assert sys.path == before  # taken off again
    monkeypatch.delitem(sys.modules, "snnc_user_data_mod")


# -- issue 10: empty data sets, archive sizes checked before reading ------------------------------------------

def test_an_empty_data_set_is_refused(write_tensors, capsys):
    from tests.cli.support import assert_input_error

    path = write_tensors("empty.safetensors", x=torch.zeros(0, 8), y=torch.zeros(0, dtype=torch.int64))
    with pytest.raises(DataError, match="holds no samples"):
        load_data(str(path))
    assert_input_error(capsys, "evaluate", "tests.models:leaky_mlp", "--data", path, match="holds no samples")
    with pytest.raises(DataError, match="holds no samples"):
        load_data("tests.models:empty_dataset")


def _npz_with_member(path, header_shape, data: bytes):
    import io
    import zipfile

    from numpy.lib import format as npy

    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": header_shape})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", buf.getvalue() + data)
        y = io.BytesIO()
        np.save(y, np.zeros(2, dtype=np.int64))
        archive.writestr("y.npy", y.getvalue())
    return path


def test_an_npz_member_declaring_more_data_than_it_holds_is_refused_before_allocating(tmp_path):
    path = _npz_with_member(tmp_path / "lie.npz", (10**12, 8), b"\0" * 64)
    with pytest.raises(DataError, match=r"'x.npy' declares 32,000,000,000,000 bytes of data but holds"):
        load_data(str(path))


def test_an_npz_member_inflating_past_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    import snncompress.data.loading as loading

    path = _npz_with_member(tmp_path / "bomb.npz", (4096, 8), b"\0" * 4096 * 8 * 4)  # 128 KiB of zeros
    assert path.stat().st_size < 4096  # deflated to almost nothing
    monkeypatch.setattr(loading, "MAX_NPZ_MEMBER_BYTES", 64 * 1024)
    with pytest.raises(DataError, match=r"'x.npy' inflates to 131,200 bytes, more than 65,536"):
        load_data(str(path))
    monkeypatch.undo()
    with pytest.raises(DataError, match="x has 4096 samples but y has 2"):  # under the real limit it is read
        load_data(str(path))


def test_an_npz_that_is_not_a_zip_is_one_line(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK\3\4 not really")
    with pytest.raises(DataError, match="cannot read data file"):
        load_data(str(path))


def test_a_tensor_file_without_y_is_unlabelled(write_tensors):
    x = torch.rand(6, 8)
    bundle = load_data(str(write_tensors("x_only.safetensors", x=x)), DataOptions(limit=5))
    assert not bundle.labelled and bundle.num_classes is None and len(bundle) == 5
    xs, ys = next(iter(bundle.loader()))
    assert torch.equal(xs, x[:5]) and ys.tolist() == [-1] * 5
    rated = load_data(str(write_tensors("x_only.npz", x=x)), DataOptions(encoding="rate", time_steps=3))
    assert not rated.labelled and rated.is_sequence and rated.sample_input().shape == (3, 8)
    assert load_data("digits").labelled and load_data(str(write_tensors(
        "xy.pt", x=x, y=torch.zeros(6, dtype=torch.long)))).labelled


@pytest.mark.parametrize("spec", ["tests.models:unlabelled_dataset", "tests.models:unlabelled_tuples"])
def test_a_dataset_of_x_alone_is_unlabelled(spec):
    bundle = load_data(spec, DataOptions(batch_size=4))
    assert not bundle.labelled and bundle.num_classes is None and len(bundle) == 10
    x, y = bundle.dataset[3]
    assert x.shape == (8,) and y == -1
    xs, ys = next(iter(bundle.loader()))
    assert xs.shape == (4, 8) and ys.tolist() == [-1] * 4
    assert prepare(leaky_mlp(), bundle) is not None  # the model runs on it


def test_a_dataset_mixing_pairs_and_x_alone_is_refused():
    with pytest.raises(DataError, match="item 1 is an .x, y. pair but item 0 is an x alone; yield one form"):
        load_data("tests.models:half_labelled_dataset")
