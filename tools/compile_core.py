"""Compile the core's hot path with mypyc into build/compiled/ (see compiled_core.py).

``python tools/compile_core.py`` — run by `make` after installing. It type-checks and
compiles ``compiled_core.MODULES``, then writes the manifest last: a failed or
interrupted build leaves no manifest, so the Python sources keep running. Without a C
compiler it says so and exits 0: the product works the same, only slower.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import compiled_core  # noqa: E402

os.environ[compiled_core.PURE_ENV] = "1"  # this process must not load the build it replaces


def build() -> int:
    try:
        from mypyc.build import mypycify
        from setuptools import setup
    except ImportError as err:
        print(f"compiled core: skipped, {err.name} is not installed (pip install mypy setuptools)")
        return 0
    os.chdir(ROOT)
    target = compiled_core.BUILD
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    work = ROOT / "build" / "mypyc"
    sources = [m.replace(".", "/") + ".py" for m in compiled_core.MODULES]
    # Digests taken before compiling: a source edited during the build retires it.
    manifest = compiled_core.manifest()
    started = time.perf_counter()
    print(f"compiled core: compiling {len(sources)} modules with mypyc (once; about a minute)", flush=True)
    try:
        setup(
            name="budgetwatch-compiled-core",
            ext_modules=mypycify(sources, opt_level="3", target_dir=str(work)),
            script_args=["--quiet", "build_ext", "--build-lib", str(staging), "--build-temp", str(work / "temp")],
        )
    except (SystemExit, Exception) as err:  # a missing gcc or Python.h ends setup() with SystemExit
        shutil.rmtree(staging, ignore_errors=True)
        print(f"compiled core: not built ({err}); the Python sources run instead, correct but slower")
        return 0
    (staging / compiled_core.MANIFEST).write_text(json.dumps(manifest, indent=1), "utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"compiled core: {len(sources)} modules in {target.relative_to(ROOT)} "
          f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(build())
