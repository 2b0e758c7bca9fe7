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


# -- issue 10: SIGTERM, concurrent writers, unwritable outputs ------------------------------------------------

SLOW_WRITER = """
import sys, time
from snncompress.fileformat.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("partial")
    print("writing", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_terminated_write_leaves_no_temporary_file(tmp_path, tests_importable, signame):
    import signal
    import subprocess
    import sys

    target = tmp_path / "out.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=tests_importable)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert len(_files(tmp_path)) == 1  # the hidden temporary file
        proc.send_signal(getattr(signal, signame))
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    if signame == "SIGTERM":
        assert proc.returncode == 128 + signal.SIGTERM
    assert _files(tmp_path) == []


def test_without_force_a_target_that_appears_during_the_write_is_kept(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(InputError, match="exists; pass --force"):
        with atomic_path(target, replace=False) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")  # another process finished first
    assert target.read_text() == "theirs"
    assert _files(tmp_path) == ["out.json"]
    with atomic_path(target, replace=True) as tmp:
        tmp.write_text("mine")
    assert target.read_text() == "mine"


def test_concurrent_writers_of_one_new_output_exactly_one_succeeds(tmp_path):
    import threading

    from snncompress.fileformat.compressed import save_compressed
    from tests.models import leaky_mlp

    target = tmp_path / "out.safetensors"
    models = [leaky_mlp() for _ in range(4)]
    barrier = threading.Barrier(len(models))
    results: list[str] = []

    def write(model):
        barrier.wait()
        try:
            save_compressed(model, target)
            results.append("ok")
        except InputError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=write, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results.count("ok") == 1, results
    assert all("exists; pass --force" in r for r in results if r != "ok")
    assert _files(tmp_path) == ["out.safetensors"]


@pytest.mark.parametrize("err,match", [
    (30, "is not writable"),  # EROFS
    (28, "no space left on device"),  # ENOSPC
])
def test_unwritable_output_is_one_line_exit_2_and_nothing_written(capsys, tmp_path, monkeypatch, err, match):
    import errno
    import os

    from tests.cli.support import assert_input_error

    assert err in (errno.EROFS, errno.ENOSPC)
    if err == errno.EROFS:
        def refuse(*args, **kwargs):
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr("snncompress.fileformat.atomic.tempfile.mkstemp", refuse)
    else:
        def full(src, dst):
            raise OSError(err, os.strerror(err))

        monkeypatch.setattr("snncompress.fileformat.atomic.os.link", full)
    monkeypatch.chdir(tmp_path)
    assert_input_error(capsys, "export", "tests.models:leaky_mlp", "-o", "out.nir", "--input-shape", "8", match=match)
    assert _files(tmp_path) == []


def test_read_only_folder_is_refused_before_any_work(tmp_path):
    import os

    from snncompress.errors import OutputError

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(OutputError, match="is not writable"):
            check_output_path(folder / "out.safetensors", force=False)
    finally:
        folder.chmod(0o755)
