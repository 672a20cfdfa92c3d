"""The wheel `pip install .` builds (the Docker image's install) ships the whole
product: every module and data file (uPlot's licence too) of the four packages in the checkout, and
the switch to the compiled core they import first."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("budget", "alerts", "connectors", "streams", "compiled_core.py")


def checkout_files() -> set[str]:
    tracked = subprocess.run(
        ["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return set(tracked)


def test_the_wheel_holds_every_module_and_data_file_of_the_checkout(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    expected = checkout_files()
    assert expected, "git ls-files listed no package file"
    for path in expected:  # what a clone has: no stray local files
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / path, source / path)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, check=False,
    )
    assert built.returncode == 0, built.stderr
    assert "Warning" not in built.stderr, built.stderr  # e.g. a data directory outside `packages`
    (wheel,) = (tmp_path / "dist").glob("budgetwatch-*.whl")
    shipped = {
        name for name in zipfile.ZipFile(wheel).namelist()
        if name.split("/", 1)[0] in PACKAGES
    }
    assert sorted(expected - shipped) == [], "in the checkout but not in the wheel"
    assert sorted(shipped - expected) == [], "in the wheel but not in the checkout"
