"""A real Alertmanager on 127.0.0.1, configured by `budgetwatch alertmanager-config`,
receives the pushed alerts and delivers them, routed by department, to a local
webhook receiver — then the resolution."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from typer.testing import CliRunner

from streams.cli import app
from streams.outbox import Dispatcher
from tests.integration.serve_process import stop
from tests.notify_helpers import EDU, HEALTH, fire, free_port, resolve, run_events, write_yaml

ALERTMANAGER = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
AMTOOL = shutil.which("amtool")

pytestmark = pytest.mark.skipif(
    ALERTMANAGER is None or AMTOOL is None,
    reason="needs the Alertmanager binaries (`alertmanager` or `prometheus-alertmanager`, "
    "and `amtool`: Debian package prometheus-alertmanager)",
)

RULES = {"low_execution", "behind_schedule", "stalled", "department_low_execution"}
NOTIFIED = RULES - {"behind_schedule"}  # inhibited by the same project's low_execution
BOARD = "https://budget.example.gov.cn/bw"


async def until(check: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Wait for a condition (the deadline only guards against a hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.1)


class Receivers:
    """Webhook receivers on 127.0.0.1 for the generated config's departments, recording
    what Alertmanager sends each: receiver path -> (alertname, department, status)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
        self.annotations: list[dict[str, Any]] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/am/{name}"

    async def hook(self, request: web.Request) -> web.Response:
        payload = await request.json()
        for alert in payload["alerts"]:
            labels = alert["labels"]
            self.received[request.match_info["name"]].add(
                (labels["alertname"], labels["department"], alert["status"])
            )
            self.annotations.append(alert["annotations"])
        return web.Response(text="ok")


def alertmanager_config(tmp_path: Path, receivers: Receivers) -> Path:
    """`budgetwatch alertmanager-config` for two departments, a default and an escalation
    contact, with intervals short enough for a test; checked by the real amtool."""
    directory = write_yaml(
        tmp_path / "departments.yaml",
        {
            "default": {"name": "财政局绩效科", "webhook": receivers.url("default")},
            "escalation": {"name": "财政局（升级）", "webhook": receivers.url("bureau"), "severities": ["critical"]},
            "departments": {
                EDU: {"name": "教育局", "webhook": receivers.url(EDU)},
                HEALTH: {"name": "卫生健康委员会", "webhook": receivers.url(HEALTH)},
            },
        },
    )
    config = tmp_path / "alertmanager.yml"
    result = CliRunner().invoke(app, [
        "alertmanager-config", "--departments", str(directory), "--out", str(config), "--group-wait", "1s",
        "--group-interval", "1s", "--repeat-interval", "1h", "--resolve-timeout", "1m",
    ])
    assert result.exit_code == 0, result.output
    check = subprocess.run([str(AMTOOL), "check-config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return config


def with_alertmanager(tmp_path: Path, scenario: Callable[[str, Receivers], Any]) -> Receivers:
    """Run ``scenario(alertmanager_url, receivers)`` against a real Alertmanager on
    127.0.0.1 with the generated config, and the receivers it notifies; both stop after."""
    receivers = Receivers()
    config = alertmanager_config(tmp_path, receivers)
    am_port = free_port()
    process = subprocess.Popen(
        [
            str(ALERTMANAGER),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    async def main() -> None:
        server = web.Application()
        server.router.add_post("/am/{name}", receivers.hook)
        runner = web.AppRunner(server)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", receivers.port).start()
        am = f"http://127.0.0.1:{am_port}"
        try:
            async with httpx.AsyncClient() as probe:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                ready = False
                while not ready:
                    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                    assert loop.time() < deadline, "Alertmanager did not become ready"
                    try:
                        ready = (await probe.get(f"{am}/-/ready")).status_code == 200
                    except httpx.TransportError:
                        ready = False
                    if not ready:
                        await asyncio.sleep(0.1)
            await scenario(am, receivers)
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        stop(process, timeout=10)
    return receivers


def test_alertmanager_routes_by_department_then_resolves(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    assert fire(db) == 8

    async def scenario(am: str, receivers: Receivers) -> None:
        received = receivers.received
        # Re-sent every second, each push valid for four: an alert not re-sent dies in 4 s.
        dispatcher = Dispatcher(db, None, alertmanager_url=am, alertmanager_interval=1, board_url=BOARD)
        stats = await dispatcher.run_once()
        assert stats.alertmanager_error is None and stats.alertmanager_pushed == 8
        firing = {(rule, dept, "firing") for rule in NOTIFIED for dept in (EDU, HEALTH)}
        await until(lambda: received[EDU] | received[HEALTH] >= firing, "firing notifications")
        # routed by department: each department gets only its own alerts (its
        # behind_schedule may slip out before Alertmanager's inhibitor has seen the
        # low_execution of the same push: checked below by its state, not by timing)
        assert received[EDU] - {("behind_schedule", EDU, "firing")} == {(r, EDU, "firing") for r in NOTIFIED}
        assert received[HEALTH] - {("behind_schedule", HEALTH, "firing")} == {
            (r, HEALTH, "firing") for r in NOTIFIED}
        held: list[dict[str, Any]] = []

        async def inhibited() -> set[str]:
            async with httpx.AsyncClient() as api:
                held[:] = (await api.get(f"{am}/api/v2/alerts")).json()
            return {a["labels"]["alertname"] for a in held if a["status"]["inhibitedBy"]}

        for _ in range(50):  # a project's behind_schedule is held back by its low_execution
            if await inhibited() == {"behind_schedule"}:
                break
            await asyncio.sleep(0.2)
        assert await inhibited() == {"behind_schedule"}
        assert len(held) == 8
        assert all(a["generatorURL"] == f"{BOARD}/alerts/{a['annotations']['alert_id']}" for a in held)

        # The notifier holds new transitions (reading a backlog): what Alertmanager was
        # told stays alive, re-sent as it was, well past the 4 s an alert lives alone.
        dispatcher.hold = lambda: True
        for _ in range(14):
            await dispatcher.run_once()
            await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as api:
            alive = (await api.get(f"{am}/api/v2/alerts", params={"active": "true"})).json()
        assert len(alive) == 8 and all(a["status"]["state"] in ("active", "suppressed") for a in alive)
        assert not any(status == "resolved" for seen in received.values() for *_, status in seen)
        dispatcher.hold = None
        # the bureau gets the critical ones too (continue: true); nothing falls to default
        await until(lambda: len(received["bureau"]) == 2, "escalation copies")
        assert received["bureau"] == {
            ("low_execution", EDU, "firing"),
            ("low_execution", HEALTH, "firing"),
        }
        assert "default" not in received

        resolve(db)
        stats = await dispatcher.run_once()  # the change is pushed at once
        assert stats.alertmanager_error is None and stats.alertmanager_pushed == 8
        resolved = {(rule, dept, "resolved") for rule in NOTIFIED for dept in (EDU, HEALTH)}
        await until(lambda: received[EDU] | received[HEALTH] >= resolved, "resolved notifications")
        await dispatcher.aclose()

    receivers = with_alertmanager(tmp_path, scenario)
    summaries = {a["summary"] for a in receivers.annotations}
    assert "【新预警·严重预警】预算执行率偏低：教育局 校舍改造" in summaries
    assert "【预警解除】预算执行率偏低：教育局 校舍改造" in summaries
    assert any("请预算单位" in a["action"] for a in receivers.annotations)


def test_a_years_close_reaches_departments_through_alertmanager_as_such(tmp_path: Path) -> None:
    """On 01-31 the year's alerts still firing end. Alertmanager's own resolved notice
    (send_resolved) went out as 【预警解除】 with a 【新预警】 summary; it now says 年度结束."""
    db = tmp_path / "bw.db"
    assert fire(db) == 8

    async def scenario(am: str, receivers: Receivers) -> None:
        received = receivers.received
        dispatcher = Dispatcher(db, None, alertmanager_url=am, alertmanager_interval=1)
        await dispatcher.run_once()
        firing = {(rule, dept, "firing") for rule in NOTIFIED for dept in (EDU, HEALTH)}
        await until(lambda: received[EDU] | received[HEALTH] >= firing, "firing notifications")
        assert run_events(db, [], "2026-02-02") == 8  # the year's close ends all eight
        stats = await dispatcher.run_once()
        assert stats.alertmanager_error is None and stats.alertmanager_pushed == 8
        ended = {(rule, dept, "resolved") for rule in NOTIFIED for dept in (EDU, HEALTH)}
        await until(lambda: received[EDU] | received[HEALTH] >= ended, "the close's notices")
        await dispatcher.aclose()

    receivers = with_alertmanager(tmp_path, scenario)
    closing = [a for a in receivers.annotations if a.get("reason") == "year_closed"]
    # (a behind_schedule may be told too: its inhibitor, the project's low_execution, ended with it)
    assert {a["rule_name"] for a in closing} >= {"预算执行率偏低", "长期未支付", "部门预算执行率偏低"}
    assert all(a["summary"].startswith("【年度结束】") and a["description"].startswith("【年度结束】")
               for a in closing)
    assert not any(a["summary"].startswith("【预警解除】") for a in receivers.annotations)


NAMES = {"department_name": "教育局", "rule_name": "预算执行率偏低"}


@pytest.mark.parametrize(("status", "annotations", "subject"), [
    ("firing", NAMES, "【预算预警】教育局 预算执行率偏低（0条）"),
    ("resolved", NAMES, "【预警解除】教育局 预算执行率偏低（0条）"),
    ("resolved", {**NAMES, "reason": "year_closed"}, "【年度结束】教育局 预算执行率偏低（0条）"),
    ("resolved", {**NAMES, "reason": "severity_changed"}, "【预警级别变更】教育局 预算执行率偏低（0条）"),
])
def test_the_mail_subject_names_a_years_close_as_such(
    tmp_path: Path, status: str, annotations: dict[str, str], subject: str
) -> None:
    """Alertmanager's own resolved notice of an alert ended with its year, or of the old
    series a severity change ends (send_resolved), read 预警解除: the generated subject
    template, rendered by the real amtool."""
    import orjson

    from connectors.alertmanager import _SUBJECT

    assert AMTOOL is not None
    (tmp_path / "subject.tmpl").write_text('{{ define "subject" }}' + _SUBJECT + "{{ end }}", encoding="utf-8")
    (tmp_path / "data.json").write_bytes(orjson.dumps({
        "receiver": "department-D101", "status": status, "alerts": [], "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": annotations, "externalURL": "",
    }))
    rendered = subprocess.run(
        [AMTOOL, "template", "render", f"--template.glob={tmp_path / 'subject.tmpl'}",
         f"--template.data={tmp_path / 'data.json'}", '--template.text={{ template "subject" . }}'],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert rendered.stdout.strip() == subject


def test_the_mail_body_is_the_notifications_in_chinese(tmp_path: Path) -> None:
    """The generated email_configs set a Chinese subject over Alertmanager's own English
    body ([FIRING:n], View in Alertmanager, annotations by key): the real amtool renders
    the body the config now sets, text and HTML."""
    import orjson

    from connectors.alertmanager import _BODY, _HTML

    alert = {"status": "firing", "labels": {"alertname": "BudgetLowExecution"}, "annotations": {
        "summary": "【新预警·严重预警】预算执行率偏低：教育局 校舍<改造>", "description": "执行率10.00%，低于30.00%",
        "figures": "预算金额：100.00万元；已支付：10.00万元", "action": "请在10个工作日内说明原因",
        "alert_id": "2025:low_execution:project:P1"}}
    (tmp_path / "data.json").write_bytes(orjson.dumps({
        "receiver": "department-D101", "status": "firing", "alerts": [alert, alert], "groupLabels": {},
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
    }))
    for name, template in (("text", _BODY), ("html", _HTML)):
        (tmp_path / f"{name}.tmpl").write_text(f'{{{{ define "{name}" }}}}{template}{{{{ end }}}}', encoding="utf-8")
        rendered = subprocess.run(
            [AMTOOL, "template", "render", f"--template.glob={tmp_path / f'{name}.tmpl'}",
             f"--template.data={tmp_path / 'data.json'}", f'--template.text={{{{ template "{name}" . }}}}'],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        assert rendered.count("建议措施") == 2 and "2025:low_execution:project:P1" in rendered
        assert "FIRING" not in rendered and "View in Alertmanager" not in rendered
        assert "请勿直接回复" in rendered
