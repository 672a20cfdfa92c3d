"""A real Prometheus (Debian package `prometheus`) scrapes a real `budgetwatch serve`.

Both run on 127.0.0.1 on free ports with temp directories, and are stopped at the
end. Skipped, with the reason, when the `prometheus` binary is not installed
(`.ci/run` installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.serve_process import (
    county_year,
    free_port,
    post_and_wait,
    serve,
    stop,
    wait_until,
)

PROMETHEUS = shutil.which("prometheus")
DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the `prometheus` binary is not installed (apt-get install prometheus; .ci/run does)",
)


class Stack:
    def __init__(self, serve_url: str, prometheus_url: str) -> None:
        self.serve_url = serve_url
        self.prometheus_url = prometheus_url

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query"
        response = httpx.get(url, params={"query": expr}, timeout=10)
        # 503 "Service Unavailable" while Prometheus opens its TSDB: an HTTPError, so a
        # readiness poll (wait_until) waits on instead of failing to parse it as JSON.
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus")
    with serve(tmp) as serve_url:
        answer = post_and_wait(serve_url, county_year())
        assert answer["processed"] is True and answer["applied"] > 1000
        port = free_port()
        host_port = serve_url.removeprefix("http://")
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: budgetwatch\n"
            f"    static_configs:\n      - targets: ['{host_port}']\n",
            encoding="utf-8",
        )
        log = (tmp / "prometheus.log").open("wb")
        assert PROMETHEUS is not None
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            stack = Stack(serve_url, f"http://127.0.0.1:{port}")
            # rate() in the dashboards needs at least two scrapes in its window.
            scrapes = 'count_over_time(up{job="budgetwatch"}[5m]) >= 3'
            wait_until(lambda: stack.query(scrapes), "three scrapes in Prometheus")
            yield stack
        finally:
            stop(process)
            log.close()


def test_prometheus_returns_the_region_ratio_that_api_status_reports(stack: Stack) -> None:
    status = httpx.get(f"{stack.serve_url}/api/status", timeout=30).json()
    expected = status["region"]["execution_rate"]
    assert 0 < expected < 1
    (sample,) = stack.query("budget_region_execution_ratio")
    assert float(sample["value"][1]) == pytest.approx(expected, abs=1e-6)
    (summed,) = stack.query("sum(budget_paid_yuan) / sum(budget_allocated_yuan)")
    assert float(summed["value"][1]) == pytest.approx(expected, abs=1e-6)
    (up,) = stack.query('up{job="budgetwatch"}')
    assert up["value"][1] == "1"


def test_every_dashboard_query_evaluates_with_data_in_prometheus(stack: Stack) -> None:
    """Each panel's PromQL is valid for this Prometheus and returns series from serve (a
    target for the compose stack, refId "stack", is only checked to be valid here: serve
    does not export the workers' series; tests/integration/test_dashboards.py checks
    its names against a worker's)."""
    departments = stack.query("budget_department_execution_ratio")
    department = departments[0]["metric"]["department"]
    checked = 0
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$department", department)
                if target.get("refId") == "stack":
                    stack.query(expr)  # a syntax or type error fails here
                    continue
                assert stack.query(expr), f"{path.name} «{panel['title']}»: {expr} returned no data"
                checked += 1
    assert checked >= 20


def test_the_dashboards_join_on_department_names_drops_no_alert(stack: Stack) -> None:
    """Every department with an alert firing has a name to join on (budget_department_info),
    or the overview's alert panels would leave its alerts out."""
    firing = "sum by (department) (budget_alerts_firing)"
    joined = stack.query(f"{firing} * on (department) group_left (department_name) budget_department_info")
    departments = {s["metric"]["department"] for s in stack.query(firing)}
    assert departments and {s["metric"]["department"] for s in joined} == departments
