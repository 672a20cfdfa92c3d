"""Load-time choice between the mypyc-compiled core and its Python sources.

`make` compiles the hot path of the core (``MODULES``: the ledger, the rules, the
monitor, the alert lifecycle, ...) with mypyc into ``build/compiled/`` and records a
digest of every source of the compiled packages. ``budget/__init__.py`` and
``alerts/__init__.py`` call :func:`extend` first thing, which puts the compiled
directory ahead of the sources on the package's ``__path__`` — only when the build
matches this interpreter and every source as it is now. An edited source, another
Python, or ``BUDGETWATCH_PURE=1`` runs the Python sources: a stale extension module
never runs in place of the code beside it, and the sources stay the reference (the
same tests pass on both; ``tests/functional/test_compiled_core.py`` compares them).

All or nothing: compiled modules call each other's classes directly, so a compiled
monitor beside a pure ledger would fail; the choice is made once per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
import warnings
from pathlib import Path

# The per-event path of a replay, of the Faust agents and of ingest's parser. Modules
# defining pydantic models stay Python (mypyc does not compile such classes).
MODULES = (
    "budget.calendar",
    "budget.fast_events",
    "budget.indicators",
    "budget.ledger",
    "budget.money",
    "budget.versions",
    "alerts.dispositions",
    "alerts.lifecycle",
    "alerts.messages",
    "alerts.monitor",
    "alerts.rules",
    "alerts.workdays",
)
PACKAGES = tuple(sorted({m.split(".")[0] for m in MODULES}))
ROOT = Path(__file__).resolve().parent
BUILD = ROOT / "build" / "compiled"
MANIFEST = "manifest.json"
PURE_ENV = "BUDGETWATCH_PURE"
NOT_BUILT = "not built"  # no build at all: the sources run without a warning

_choice: tuple[bool, str] | None = None


def interpreter_tag() -> str:
    """What an extension module is built for: implementation, version and ABI."""
    return f"{sys.implementation.cache_tag}{sysconfig.get_config_var('EXT_SUFFIX')}"


def source_digests(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """SHA-256 of every Python source of the compiled packages, by relative path. A
    compiled module depends on the classes of modules it does not compile too (the
    event Record, the profile), so any edit in these packages retires the build."""
    digests: dict[str, str] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digests[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def manifest(root: Path = ROOT) -> dict[str, object]:
    return {"interpreter": interpreter_tag(), "modules": list(MODULES), "sources": source_digests(root)}


def why_not(build: Path = BUILD, root: Path = ROOT) -> str | None:
    """Why the build in ``build`` must not run here (None: it may)."""
    path = build / MANIFEST
    if not path.is_file():
        return NOT_BUILT
    try:
        recorded = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as err:
        return f"{path}: unreadable manifest ({err})"
    if recorded.get("interpreter") != interpreter_tag():
        return f"built for {recorded.get('interpreter')}, this is {interpreter_tag()}"
    if recorded.get("modules") != list(MODULES):
        return "built for another module list"
    now = source_digests(root)
    before = recorded.get("sources", {})
    changed = sorted(p for p in now.keys() | before.keys() if now.get(p) != before.get(p))
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"{changed[0]}{more} changed since the build"
    return None


def choice() -> tuple[bool, str]:
    """(compiled?, why) for this process, decided on first use."""
    global _choice
    if _choice is None:
        if os.environ.get(PURE_ENV, "") not in ("", "0"):
            _choice = (False, f"{PURE_ENV} is set")
        else:
            reason = why_not()
            _choice = (reason is None, reason or f"mypyc build in {BUILD}")
            if reason is not None and reason != NOT_BUILT:
                warnings.warn(
                    f"budgetwatch: the compiled core is out of date ({reason}); running the "
                    "Python sources, correct but slower. Rebuild it with `make compiled`.",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _choice


def active() -> bool:
    return choice()[0]


def extend(path: list[str], package: str) -> None:
    """Put the compiled modules of ``package`` ahead of its sources, if they may run."""
    if not active():
        return
    if str(BUILD) not in sys.path:
        sys.path.append(str(BUILD))  # mypyc's shared library is a top-level module
    compiled = str(BUILD / package)
    if compiled not in path:
        path.insert(0, compiled)
