"""When the mypyc build may run in place of the sources (compiled_core.why_not)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import compiled_core


def _tree(root: Path) -> Path:
    for package in compiled_core.PACKAGES:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text('"""pkg"""\n', "utf-8")
        (root / package / "core.py").write_text("X = 1\n", "utf-8")
    build = root / "build" / "compiled"
    build.mkdir(parents=True)
    return build


def _built(root: Path) -> Path:
    build = _tree(root)
    (build / compiled_core.MANIFEST).write_text(json.dumps(compiled_core.manifest(root)), "utf-8")
    return build


def test_a_build_of_these_very_sources_for_this_interpreter_may_run(tmp_path: Path) -> None:
    build = _built(tmp_path)
    assert compiled_core.why_not(build, tmp_path) is None


def test_no_manifest_means_not_built(tmp_path: Path) -> None:
    build = _tree(tmp_path)
    assert compiled_core.why_not(build, tmp_path) == compiled_core.NOT_BUILT


def test_an_edited_source_retires_the_build(tmp_path: Path) -> None:
    build = _built(tmp_path)
    (tmp_path / "budget" / "core.py").write_text("X = 2\n", "utf-8")
    assert compiled_core.why_not(build, tmp_path) == "budget/core.py changed since the build"


def test_a_new_or_removed_source_retires_the_build(tmp_path: Path) -> None:
    build = _built(tmp_path)
    (tmp_path / "alerts" / "extra.py").write_text("Y = 1\n", "utf-8")
    (tmp_path / "budget" / "core.py").unlink()
    assert compiled_core.why_not(build, tmp_path) == "alerts/extra.py and 1 more changed since the build"


def test_a_build_for_another_interpreter_or_module_list_does_not_run(tmp_path: Path) -> None:
    build = _built(tmp_path)
    path = build / compiled_core.MANIFEST
    recorded = json.loads(path.read_text("utf-8"))
    path.write_text(json.dumps({**recorded, "interpreter": "cpython-310.so"}), "utf-8")
    reason = compiled_core.why_not(build, tmp_path)
    assert reason is not None and reason.startswith("built for cpython-310.so, this is ")
    path.write_text(json.dumps({**recorded, "modules": ["budget.core"]}), "utf-8")
    assert compiled_core.why_not(build, tmp_path) == "built for another module list"
    path.write_text("{not json", "utf-8")
    reason = compiled_core.why_not(build, tmp_path)
    assert reason is not None and "unreadable manifest" in reason


def test_extend_puts_the_build_first_only_when_it_may_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled_core, "_choice", (False, compiled_core.NOT_BUILT))
    path = ["/src/budget"]
    compiled_core.extend(path, "budget")
    assert path == ["/src/budget"]
    monkeypatch.setattr(compiled_core, "_choice", (True, "built"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    compiled_core.extend(path, "budget")
    compiled_core.extend(path, "budget")  # once only
    assert path == [str(compiled_core.BUILD / "budget"), "/src/budget"]


def test_a_stale_build_is_named_in_a_warning_and_the_sources_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(compiled_core.PURE_ENV, raising=False)
    monkeypatch.setattr(compiled_core, "_choice", None)
    monkeypatch.setattr(compiled_core, "why_not", lambda: "budget/ledger.py changed since the build")
    with pytest.warns(RuntimeWarning, match=r"out of date \(budget/ledger.py changed.*make compiled"):
        assert compiled_core.choice() == (False, "budget/ledger.py changed since the build")


def test_pure_is_chosen_by_the_environment_without_looking_at_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(compiled_core.PURE_ENV, "1")
    monkeypatch.setattr(compiled_core, "_choice", None)
    monkeypatch.setattr(compiled_core, "why_not", lambda: pytest.fail("the build was inspected"))
    assert compiled_core.choice() == (False, f"{compiled_core.PURE_ENV} is set")
