"""A real `budgetwatch serve` process on 127.0.0.1 for the integration tests (not a test)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from connectors.synthetic import Spec, generate

LAUNCH = "from streams.cli import main; main()"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Terminate a server started for a test, and kill it if it does not stop in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def wait_until(check: Any, what: str, *, deadline_seconds: float = 60.0) -> Any:
    """Poll ``check()`` until it returns a truthy value (a readiness guard, not an assertion)."""
    deadline = time.monotonic() + deadline_seconds
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except (httpx.HTTPError, OSError) as err:
            last, found = err, None
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready within {deadline_seconds}s (last error: {last})")


@contextmanager
def serve(tmp: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `budgetwatch serve` on a free port; yields its base URL; kills it at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFANA_", "BUDGETWATCH_"))}
    env.update(extra_env or {})
    log = (tmp / f"serve-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--db", str(tmp / "serve.db")],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            if process.poll() is not None:
                output = (tmp / f"serve-{port}.log").read_text()
                raise AssertionError(f"serve exited early: {output}")
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

        wait_until(healthy, "budgetwatch serve")
        yield url
    finally:
        stop(process)
        log.close()


def county_year(projects: int = 100, seed: int = 3) -> bytes:
    return b"".join(line + b"\n" for line in generate(Spec(projects=projects, seed=seed)))


def post_and_wait(url: str, body: bytes) -> dict[str, Any]:
    response = httpx.post(f"{url}/events?wait=1", content=body, timeout=120)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data
