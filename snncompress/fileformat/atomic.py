"""Atomic output files: write beside the target, then rename; never overwrite without ``force``.

Three guarantees, whatever happens during the write:

* no half-written output: the data goes to a hidden temporary file (``.NAME.XXXX.tmp``) in the
  target's folder, renamed onto the target only once complete;
* no leftover: the temporary file is removed on any error, on Ctrl-C (``KeyboardInterrupt``) and on
  ``SIGTERM`` (turned into ``SystemExit(143)`` while a write is under way, in the main thread);
* no overwrite without ``force``, even under concurrency: without it the temporary file is hard-linked
  to the target (``os.link`` fails if the target exists), so of several writers of one new output
  exactly one succeeds and the others get the "exists" error.

A folder that cannot be written (read-only, full disk) is an :class:`~snncompress.errors.OutputError`
(exit code 2).
"""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from snncompress.errors import InputError, OutputError


def check_output_path(path: str | Path, force: bool) -> Path:
    """Validate an output path before any work is done.

    Raises:
        InputError: the file exists and ``force`` is False, or its folder does not exist.
        OutputError: the folder is not writable.
    """
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"output {path} exists; pass --force to overwrite it")
    if path.exists() and path.is_dir():
        raise InputError(f"output {path} is a directory")
    if not path.parent.exists():
        raise InputError(f"output folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"cannot write {path}: the folder {path.parent} is not writable")
    return path


def _exists_error(path: Path) -> InputError:
    return InputError(f"output {path} exists; pass --force to overwrite it")


def _os_error(path: Path, exc: OSError) -> OutputError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = f"the folder is not writable ({reason})"
    return OutputError(f"cannot write {path}: {reason}")


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While a write is under way, turn SIGTERM into ``SystemExit(143)`` so that cleanup code runs.

    Only from the main thread (signal handlers can only be set there), and only when SIGTERM has its
    default action: a handler the application installed is left alone.
    """
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _publish(tmp: Path, path: Path, replace: bool) -> None:
    """Move the finished temporary file onto ``path``; without ``replace``, only if ``path`` does not exist."""
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # atomic, and fails if the target exists: the exists-check and the write are one
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # a file system without hard links: claim the name exclusively, then rename over the claim
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise _exists_error(path) from None
        os.replace(tmp, path)
    else:
        tmp.unlink()


@contextmanager
def atomic_path(path: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; move it onto ``path`` on success.

    Args:
        path: the output.
        replace: overwrite an existing ``path`` (the caller's ``force``); when False, a target that
            appeared meanwhile (another process) is an error and is left as it is.

    Raises:
        InputError: ``replace`` is False and ``path`` exists at the end of the write.
        OutputError: the folder cannot be written (read-only, full disk).
    """
    path = Path(path)
    with _terminate_as_exit():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise _os_error(path, exc) from None
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            # mkstemp creates 0600; give the output the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
            try:
                yield tmp_path
                _publish(tmp_path, path, replace)
            except OSError as exc:
                raise _os_error(path, exc) from exc
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str, *, replace: bool = True) -> None:
    with atomic_path(path, replace=replace) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_atomic(path: str | Path, writer: Callable[[Path], None], *, replace: bool = True) -> None:
    with atomic_path(path, replace=replace) as tmp:
        writer(tmp)
