"""Atomic output files: write beside the target, then rename; never overwrite without ``force``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from snncompress.errors import InputError


def check_output_path(path: str | Path, force: bool) -> Path:
    """Validate an output path before any work is done.

    Raises:
        InputError: the file exists and ``force`` is False, or its folder does not exist.
    """
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"output {path} exists; pass --force to overwrite it")
    if path.exists() and path.is_dir():
        raise InputError(f"output {path} is a directory")
    if not path.parent.exists():
        raise InputError(f"output folder {path.parent} does not exist")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the output the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)
