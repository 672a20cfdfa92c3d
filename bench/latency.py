"""Event-to-alert latency under a real `budgetwatch serve` process on 127.0.0.1.

Setup (not timed): ``projects`` ordinary projects and one probe project per probe,
each probe in its own department, are registered and approved on 02-20 and the
service has processed them. Then, at a steady ``rate`` events/s for ``seconds``:

* load: every 10 ms a POST /events of JSON Lines with ``rate/100`` ordinary payments
  (small, so they raise no alert), sent on schedule whatever the answers do;
* probes: every ``probe_every`` s one payment that overspends a probe project
  (``overspend`` fires on the day it is applied). Latency = from just before its
  POST is sent until its alert is listed by GET /api/alerts?department=<its dept>
  (the POST asks ``?wait=1``, then /api/alerts is read — polled every 1 ms
  if the alert is not there yet).

All events are dated 03-01 (event time: the service's clock follows the events), so
no other rule fires and the probe's alert is the only change in its department.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.data import FISCAL_YEAR

DAY = f"{FISCAL_YEAR}-03-01"
APPROVED = f"{FISCAL_YEAR}-02-20"
LAUNCH = "from streams.cli import main; main()"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _project(pid: str, dept: str, budget_yuan: int) -> list[bytes]:
    return [
        orjson.dumps({
            "type": "project_registered", "event_id": f"{pid}-REG", "occurred_on": APPROVED,
            "project_id": pid, "fiscal_year": FISCAL_YEAR, "name": f"基准测试项目{pid}",
            "department_id": dept, "department_name": f"基准测试单位{dept}", "fund_source": "general",
        }),
        orjson.dumps({
            "type": "budget_approved", "event_id": f"{pid}-APP", "occurred_on": APPROVED,
            "project_id": pid, "amount": f"{budget_yuan}.00",
        }),
    ]


def _payment(event_id: str, pid: str, yuan: str) -> bytes:
    return orjson.dumps({
        "type": "payment", "event_id": event_id, "occurred_on": DAY, "project_id": pid,
        "amount": yuan, "payee": "某供应商", "method": "国库集中支付",
    })


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def _load(url: str, rate: int, seconds: float, projects: int, probe_every: float) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        probes = int(seconds / probe_every)
        setup: list[bytes] = []
        for k in range(projects):
            setup.extend(_project(f"L{k:06d}", f"LD{k % 50:02d}", 100_000_000))
        for k in range(probes):
            setup.extend(_project(f"Q{k:06d}", f"QD{k:05d}", 100))
        async with http.post(f"{url}/events?wait=1", data=b"\n".join(setup)) as response:
            response.raise_for_status()
            await response.read()

        per_batch = max(1, rate // 100)
        sent = 0
        tasks: list[asyncio.Task[None]] = []
        errors = 0

        async def post(body: bytes) -> None:
            nonlocal errors
            try:
                async with http.post(f"{url}/events", data=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

        latencies: list[float] = []

        async def probe(k: int) -> None:
            pid, dept = f"Q{k:06d}", f"QD{k:05d}"
            alert_id = f"{FISCAL_YEAR}:overspend:project:{pid}"
            body = _payment(f"{pid}-OVER", pid, "150.00")
            started = time.perf_counter()
            async with http.post(f"{url}/events?wait=1", data=body) as response:
                await response.read()
            while True:
                async with http.get(f"{url}/api/alerts", params={"department": dept}) as response:
                    rows = orjson.loads(await response.read())
                if any(r["alert_id"] == alert_id for r in rows):
                    latencies.append((time.perf_counter() - started) * 1000)
                    return
                await asyncio.sleep(0.001)

        loop = asyncio.get_running_loop()
        begin = loop.time()
        batches = int(seconds * 100)
        next_probe = 0
        for b in range(batches):
            due = begin + b * 0.01
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lines = []
            for _ in range(per_batch):
                pid = f"L{sent % projects:06d}"
                lines.append(_payment(f"LOAD-{sent:08d}", pid, "1.00"))
                sent += 1
            tasks.append(asyncio.create_task(post(b"\n".join(lines))))
            if b * 0.01 >= next_probe * probe_every and next_probe < probes:
                tasks.append(asyncio.create_task(probe(next_probe)))
                next_probe += 1
        elapsed_send = loop.time() - begin
        await asyncio.gather(*tasks)
        elapsed = loop.time() - begin
    return {
        "events": sent + next_probe, "seconds": elapsed, "send_seconds": elapsed_send,
        "offered_rate": (sent + next_probe) / elapsed_send, "errors": errors,
        "probes": len(latencies), "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=0.0),
        "mean_ms": statistics.fmean(latencies) if latencies else 0.0,
        "latencies_ms": [round(x, 2) for x in latencies],
    }


def measure(root: Path, *, rate: int = 1000, seconds: float = 30.0, projects: int = 2000,
            probe_every: float = 0.05, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start `budgetwatch serve` on a fresh store, drive it, stop it; returns the figures.
    ``extra_env`` sets serve's environment for experiments (e.g. BUDGETWATCH_SYNCHRONOUS)."""
    with tempfile.TemporaryDirectory(prefix="bw-latency-") as tmp:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFANA_", "BUDGETWATCH_"))}
        env["PYTHONPATH"] = str(root)
        env.update(extra_env or {})
        log_path = Path(tmp) / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--db", str(Path(tmp) / "serve.db")],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_healthy(url, process, log_path)
                result = asyncio.run(_load(url, rate, seconds, projects, probe_every))
                result["serve_peak_rss_mb"] = _peak_rss_of(process.pid)
                return result
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


def _peak_rss_of(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"budgetwatch serve exited early:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("budgetwatch serve did not become healthy within 60 s")
