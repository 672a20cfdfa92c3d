"""The one direction of imports (DESIGN §2) and the purity of the core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["budget", "alerts", "connectors", "streams"]  # each may import only those before it
IO_MODULES = {"sqlite3", "socket", "http", "urllib", "httpx", "aiohttp", "requests", "subprocess",
              "time", "os", "pathlib", "shutil", "kafka", "faust", "smtplib", "aiosmtplib", "random"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_point_one_way(layer: str) -> None:
    forbidden = set(LAYERS[LAYERS.index(layer) + 1:])
    for path in sorted((ROOT / layer).rglob("*.py")):
        bad = imports(path) & forbidden
        assert not bad, (
            f"{path.relative_to(ROOT)} imports {sorted(bad)}: imports point streams → connectors → alerts → budget"
        )


@pytest.mark.parametrize("layer", ["budget", "alerts"])
def test_the_core_does_no_io_and_reads_no_clock(layer: str) -> None:
    for path in sorted((ROOT / layer).rglob("*.py")):
        text = path.read_text("utf-8")
        bad = imports(path) & IO_MODULES
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        for call in ("date.today(", "datetime.now(", "open(", "print("):
            assert call not in text, f"{path.relative_to(ROOT)} calls {call}"


def test_every_data_file_of_a_package_is_shipped_with_it() -> None:
    # `pip install .` (the Docker image) copies only the package-data globs: a profile or
    # calendar left out would load in a checkout and fail in the image.
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]["package-data"]
    for layer in LAYERS:
        data = [p for p in (ROOT / layer).rglob("*") if p.is_file() and p.suffix in {".yaml", ".yml", ".json"}]
        for path in data:
            relative = path.relative_to(ROOT / layer)
            assert any(relative.match(glob) for glob in package_data.get(layer, [])), (
                f"{layer}/{relative} is not in [tool.setuptools.package-data] {layer}"
            )
