"""Alertmanager payloads and the generated alertmanager.yml (no network)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml

from connectors.alertmanager import alert_labels, build_config, ended_series, firing_alert, resolved_alert
from connectors.directory import parse_directory
from tests.builders import alert_transition

NOW = dt.datetime(2025, 7, 10, 4, 0, tzinfo=dt.UTC)


def alert(**over: Any) -> dict[str, Any]:
    return alert_transition(**over)


def test_labels_and_chinese_annotations() -> None:
    body = firing_alert(alert(), now=NOW, interval=60)
    assert body["labels"] == {
        "alertname": "low_execution",
        "severity": "critical",
        "department": "D101",
        "fiscal_year": "2025",
        "project": "P1",
    }
    notes = body["annotations"]
    assert notes["summary"] == "【新预警·严重预警】预算执行率偏低：教育局 校舍改造"
    assert notes["description"].startswith(alert()["message"])
    assert notes["action"] == alert()["action"]
    assert "预算执行率10.00%" in notes["figures"]
    assert body["startsAt"] == "2025-06-29T16:00:00Z"  # 06-30 00:00 Beijing time
    assert body["endsAt"] == "2025-07-10T04:04:00Z"  # four intervals ahead


def test_department_alert_has_no_project_label() -> None:
    labels = alert_labels(
        alert(subject_type="department", subject_id="D101", rule="department_low_execution")
    )
    assert "project" not in labels and labels["department"] == "D101"


def test_resolved_alert_ends_at_its_resolution_date_never_in_the_future() -> None:
    ended = resolved_alert(alert(status="resolved", updated_on="2025-07-05"), now=NOW)
    assert ended["endsAt"] == "2025-07-04T16:00:00Z"
    future = resolved_alert(alert(status="resolved", updated_on="2025-12-31"), now=NOW)
    assert future["endsAt"] == "2025-07-10T04:00:00Z"


def test_an_ended_alert_says_how_it_ended_not_that_it_is_new() -> None:
    lifted = resolved_alert(alert(status="resolved", updated_on="2025-07-05"), now=NOW)["annotations"]
    assert lifted["summary"] == "【预警解除】预算执行率偏低：教育局 校舍改造" and "reason" not in lifted
    closed = resolved_alert(alert(status="resolved", updated_on="2026-01-31", reason="year_closed"), now=NOW)
    assert closed["annotations"]["summary"] == "【年度结束】预算执行率偏低：教育局 校舍改造"
    assert closed["annotations"]["reason"] == "year_closed"


def test_a_firing_alert_that_changed_severity_is_not_called_new() -> None:
    """Its new series (labels carry the severity) went out as 【新预警】 (review)."""
    up = firing_alert(alert(severity="critical", since="2025-04-30", updated_on="2025-06-30"), now=NOW, interval=60)
    assert up["annotations"]["summary"].startswith("【预警升级·严重预警】")
    down = firing_alert(alert(severity="warning", since="2025-04-30", updated_on="2025-07-15"), now=NOW, interval=60)
    assert down["annotations"]["summary"].startswith("【预警降级·一般预警】")
    new = firing_alert(alert(since="2025-06-30", updated_on="2025-06-30"), now=NOW, interval=60)
    assert new["annotations"]["summary"].startswith("【新预警·严重预警】")


def test_the_old_severity_series_ends_as_a_severity_change() -> None:
    """A severity change ends the old series (its labels carry the severity): its summary
    said 【新预警】 and Alertmanager's notice of its end 预警解除, for an alert that went up."""
    old, new = alert(severity="warning"), alert(severity="critical")
    ended = ended_series(old, new, now=NOW, labels=alert_labels(old))
    assert ended["labels"]["severity"] == "warning" and ended["endsAt"] == "2025-07-10T04:00:00Z"
    assert ended["annotations"]["summary"] == "【预警升级·严重预警】预算执行率偏低：教育局 校舍改造"
    assert ended["annotations"]["reason"] == "severity_changed"
    # the alert as it stands: its description and severity name agree with the summary
    assert ended["annotations"]["severity_name"] == "严重预警"
    assert ended["annotations"]["description"] == new["message"]
    down = ended_series(new, old, now=NOW, labels=alert_labels(new))["annotations"]["summary"]
    assert down.startswith("【预警降级·一般预警】")


def test_a_series_ended_by_a_move_is_no_severity_change() -> None:
    """A firing alert follows its project to another department with no transition: only
    its department label changed, and the old department was told of a 预警降级 (review)."""
    old, moved = alert(), alert(department_id="D102", department_name="卫生健康委员会")
    ended = ended_series(old, moved, now=NOW, labels=alert_labels(old))
    assert ended["labels"]["department"] == "D101" and "reason" not in ended["annotations"]
    assert ended["annotations"] == resolved_alert(old, now=NOW, labels=alert_labels(old))["annotations"]


def test_start_never_after_end_for_future_dated_alerts() -> None:
    body = firing_alert(alert(since="2030-01-01"), now=NOW, interval=60)
    assert body["startsAt"] <= body["endsAt"]
    same_day = resolved_alert(
        alert(status="resolved", since="2025-07-05", updated_on="2025-07-05"), now=NOW
    )
    assert same_day["startsAt"] < same_day["endsAt"]


def test_config_routes_by_department() -> None:
    directory = parse_directory(
        {
            "default": {"name": "绩效科", "webhook": "http://127.0.0.1:1/default"},
            "escalation": {
                "name": "财政局",
                "webhook": "http://127.0.0.1:1/bureau",
                "severities": ["critical"],
            },
            "departments": {
                "D101": {
                    "name": "教育局",
                    "webhook": "http://127.0.0.1:1/d101",
                    "email": ["a@x.example"],
                },
                'D"2': {"name": "奇怪的编码", "webhook": "http://127.0.0.1:1/d2"},
            },
        }
    )
    config = yaml.safe_load(yaml.safe_dump(build_config(directory, group_wait="1s")))
    route = config["route"]
    assert route["receiver"] == "default" and route["group_wait"] == "1s"
    assert route["group_by"] == ["alertname", "department"]
    assert route["routes"][0] == {
        "receiver": "escalation",
        "matchers": ['severity=~"critical"'],
        "continue": True,
    }
    assert {"receiver": "department-D101", "matchers": ['department="D101"']} in route["routes"]
    assert {"receiver": 'department-D"2', "matchers": ['department="D\\"2"']} in route["routes"]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["department-D101"]["webhook_configs"] == [
        {"url": "http://127.0.0.1:1/d101", "send_resolved": True}
    ]
    assert "email_configs" not in receivers["department-D101"]  # no SMTP smarthost given
    with_mail = build_config(directory, smtp_smarthost="127.0.0.1:25", smtp_from="bw@x.example")
    mail = {r["name"]: r for r in with_mail["receivers"]}["department-D101"]["email_configs"][0]
    assert mail["to"] == "a@x.example" and mail["send_resolved"] is True
    assert with_mail["global"]["smtp_smarthost"] == "127.0.0.1:25"
