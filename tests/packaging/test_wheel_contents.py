"""A built wheel carries every data file the package reads at run time (a non-editable install works)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_package_data_file(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("snncompress-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data_files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "snncompress").rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "snncompress/demo/default.yaml" in data_files  # the demo's recipe, read by `snncompress demo`
    assert "snncompress/demo/weights/digits_csnn.safetensors" in data_files
    missing = [f for f in data_files if f not in names]
    assert not missing, f"package data missing from the wheel (pyproject package-data): {missing}"
