"""Atomic output files (``snncompress.fileformat.atomic``)."""

from __future__ import annotations

import pytest

from snncompress.errors import InputError
from snncompress.fileformat.atomic import atomic_path, check_output_path, write_atomic, write_text_atomic


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_check_output_path(tmp_path):
    target = tmp_path / "out.json"
    assert check_output_path(str(target), force=False) == target
    target.write_text("old")
    with pytest.raises(InputError, match=r"output .*out.json exists; pass --force to overwrite it"):
        check_output_path(target, force=False)
    assert check_output_path(target, force=True) == target
    assert target.read_text() == "old"  # checking writes nothing
    with pytest.raises(InputError, match="is a directory"):
        check_output_path(tmp_path, force=True)
    with pytest.raises(InputError, match="output folder .*missing does not exist"):
        check_output_path(tmp_path / "missing" / "out.json", force=False)


def test_atomic_path_renames_onto_the_target_on_success(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and tmp.name.startswith(".out.json.")
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the rename
    assert target.read_text() == "new"
    assert _files(tmp_path) == ["out.json"]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert _files(tmp_path) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        write_atomic(target, lambda tmp: (_ for _ in ()).throw(RuntimeError("writer failed")))
    assert target.read_text() == "old" and _files(tmp_path) == ["out.json"]


def test_atomic_path_when_the_writer_writes_nothing(tmp_path):
    with atomic_path(tmp_path / "out.bin"):
        pass
    assert (tmp_path / "out.bin").read_bytes() == b""  # mkstemp created it empty


def test_write_text_atomic(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert _files(tmp_path) == ["a.txt"]
