"""Helpers shared by the CLI tests: run ``snncompress`` in-process and check one-line input errors."""

from __future__ import annotations

import pytest

from snncompress.cli.app import main


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``snncompress ARGS`` in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def assert_input_error(capsys, *args, match: str) -> str:
    """The command fails with exit code 2 and a one-line ``error: ...`` naming the problem, no traceback."""
    code, out, err = cli(capsys, *args)
    assert code == 2, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]
    return lines[0]
