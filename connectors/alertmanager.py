"""Prometheus Alertmanager: the pushed alert payload, the POST, and a routing config.

Alerts go to ``POST {url}/api/v2/alerts`` with labels ``alertname`` (the rule),
``severity``, ``department``, ``project`` (project alerts only) and
``fiscal_year``, and Chinese annotations. Active alerts are re-sent with
``endsAt`` a few intervals ahead; a resolved alert is sent once more with
``endsAt`` = its resolution time. ``build_config`` writes an ``alertmanager.yml``
that routes by the ``department`` label to each department's webhook and email.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import httpx

from alerts.messages import RULE_NAMES, SEVERITY_NAMES
from alerts.notification_text import figure_lines, headline
from alerts.profile import SEVERITY_RANK
from budget.calendar import CHINA_TIME
from connectors.directory import Contact, Directory

# Business dates are Beijing dates.


class AlertmanagerError(Exception):
    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


def business_time(date_iso: str) -> dt.datetime:
    """00:00 Beijing time of a business date (YYYY-MM-DD)."""
    day = dt.date.fromisoformat(date_iso[:10])
    return dt.datetime(day.year, day.month, day.day, tzinfo=CHINA_TIME)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# A project under its execution floor (critical) is also, as a rule, behind its spending
# curve: the department hears of the floor, not twice of one slow spend. progress_gap
# (performance against spending) and stalled (no payment at all) say something else.
INHIBIT_RULES: list[dict[str, Any]] = [
    {
        "source_matchers": ['alertname="low_execution"'],
        "target_matchers": ['alertname="behind_schedule"'],
        "equal": ["fiscal_year", "department", "project"],
    },
]


def alert_labels(alert: Mapping[str, Any]) -> dict[str, str]:
    labels = {
        "alertname": str(alert["rule"]),
        "severity": str(alert["severity"]),
        "department": str(alert["department_id"]),
        "fiscal_year": str(alert["fiscal_year"]),
    }
    if alert.get("subject_type") == "project":
        labels["project"] = str(alert["subject_id"])
    return labels


_TOP_SEVERITY = max(SEVERITY_RANK, key=lambda s: SEVERITY_RANK[s])


def _firing_kind(alert: Mapping[str, Any]) -> str:
    """How a firing alert came to stand as it does: new, or — evaluated again after it
    began, which only a change of severity does (alerts.lifecycle) — up or down."""
    if alert.get("updated_on") == alert.get("since"):
        return "firing"
    return "escalated" if alert.get("severity") == _TOP_SEVERITY else "deescalated"


def alert_annotations(alert: Mapping[str, Any]) -> dict[str, str]:
    """Annotations of an alert as it stands: a resolved one's summary says it resolved —
    or, with ``reason``, that its year closed (年度结束) — not that it is new."""
    rule = str(alert["rule"])
    severity = str(alert["severity"])
    figures = "；".join(f"{label}{value}" for label, value in figure_lines(alert))
    ended = alert.get("status") == "resolved"
    annotations = {
        "summary": headline({**alert, "transition": "resolved" if ended else _firing_kind(alert)}),
        "description": str(alert.get("message", "")),
        "action": str(alert.get("action", "")),
        "rule_name": RULE_NAMES.get(rule, rule),
        "severity_name": SEVERITY_NAMES.get(severity, severity),
        "department_name": str(alert.get("department_name", "")),
        "subject_name": str(alert.get("subject_name", "")),
        "since": str(alert.get("since", "")),
        "alert_id": str(alert.get("alert_id", "")),
    }
    if figures:
        annotations["figures"] = figures
    if ended and alert.get("reason"):
        annotations["reason"] = str(alert["reason"])
    return annotations


def am_alert(
    alert: Mapping[str, Any],
    *,
    now: dt.datetime,
    ends_at: dt.datetime,
    labels: Mapping[str, str] | None = None,
    generator_url: str | None = None,
) -> dict[str, Any]:
    """One element of the ``/api/v2/alerts`` body.

    ``startsAt`` is the business date the episode began, never after ``now``
    (a replayed future-dated log must not produce startsAt > endsAt);
    ``endsAt`` is never before ``startsAt``.
    """
    starts = min(business_time(str(alert["since"])), now)
    ends = max(ends_at, starts + dt.timedelta(seconds=1))
    body: dict[str, Any] = {
        "labels": dict(labels if labels is not None else alert_labels(alert)),
        "annotations": alert_annotations(alert),
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
    }
    if generator_url:
        body["generatorURL"] = generator_url
    return body


def firing_alert(
    alert: Mapping[str, Any], *, now: dt.datetime, interval: float, generator_url: str | None = None
) -> dict[str, Any]:
    """An active alert, valid for four push intervals (re-sent every interval)."""
    return am_alert(
        alert,
        now=now,
        ends_at=now + dt.timedelta(seconds=4 * interval),
        generator_url=generator_url,
    )


def resolved_alert(
    alert: Mapping[str, Any],
    *,
    now: dt.datetime,
    labels: Mapping[str, str] | None = None,
    generator_url: str | None = None,
) -> dict[str, Any]:
    """A resolved alert ended at its resolution date (not later than now)."""
    resolved_on = alert.get("updated_on") if alert.get("status") == "resolved" else None
    ends = min(business_time(str(resolved_on)), now) if resolved_on else now
    return am_alert(alert, now=now, ends_at=ends, labels=labels, generator_url=generator_url)


SEVERITY_CHANGED = "severity_changed"


def ended_series(
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    now: dt.datetime,
    labels: Mapping[str, str],
    generator_url: str | None = None,
) -> dict[str, Any]:
    """The series an alert's labels no longer match, ended now that it fires under new
    ones (Alertmanager sees another alert). For a change of severity its annotations are
    the alert's as it stands, its summary says it went up or down — not that it is new,
    nor lifted — and ``reason: severity_changed`` names it in the notice Alertmanager
    sends of the end. Any other change (the project moved to another department) ends
    the old series as it was told."""
    if current["severity"] == previous["severity"]:
        return am_alert(previous, now=now, ends_at=now, labels=labels, generator_url=generator_url)
    body = am_alert(current, now=now, ends_at=now, labels=labels, generator_url=generator_url)
    up = SEVERITY_RANK.get(str(current["severity"]), 0) > SEVERITY_RANK.get(str(previous["severity"]), 0)
    body["annotations"]["summary"] = headline({
        **current, "transition": "escalated" if up else "deescalated",
        "previous_severity": previous["severity"],
    })
    body["annotations"]["reason"] = SEVERITY_CHANGED
    return body


async def post_alerts(
    client: httpx.AsyncClient, base_url: str, alerts: list[dict[str, Any]], *, chunk: int = 500
) -> None:
    """POST the alerts to ``{base_url}/api/v2/alerts`` in chunks."""
    url = base_url.rstrip("/") + "/api/v2/alerts"
    for start in range(0, len(alerts), chunk):
        try:
            response = await client.post(url, json=alerts[start : start + chunk])
        except httpx.TransportError as err:
            raise AlertmanagerError(
                f"Alertmanager {url}: 无法连接（{err or type(err).__name__}）；"
                "请检查 BUDGETWATCH_ALERTMANAGER_URL 和 Alertmanager 是否运行"
            ) from None
        if response.status_code >= 400:
            raise AlertmanagerError(
                f"Alertmanager {url}: HTTP {response.status_code} {response.text[:300]}",
                transient=response.status_code >= 500,
            )


# -- alertmanager.yml ------------------------------------------------------


def receiver_name(recipient: str) -> str:
    return f"department-{recipient}" if recipient not in ("default", "escalation") else recipient


def _matcher(label: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{label}="{escaped}"'


def _receiver(name: str, contact: Contact | None, *, email: bool) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": name}
    if contact is None:
        return receiver
    if contact.webhook:
        receiver["webhook_configs"] = [{"url": contact.webhook, "send_resolved": True}]
    if contact.email and email:
        receiver["email_configs"] = [
            {
                "to": ", ".join(contact.email),
                "send_resolved": True,
                "headers": {"Subject": _SUBJECT},
                # Alertmanager's own body is English ([FIRING:n], View in Alertmanager) and
                # lists the annotations by key: the body says what a notification says.
                "text": _BODY,
                "html": _HTML,
            }
        ]
    return receiver


_SUBJECT = (
    '【{{ if eq .Status "firing" }}预算预警{{ else if eq .CommonAnnotations.reason "year_closed" }}年度结束'
    '{{ else if eq .CommonAnnotations.reason "severity_changed" }}预警级别变更{{ else }}预警解除{{ end }}】'
    "{{ .CommonAnnotations.department_name }} {{ .CommonAnnotations.rule_name }}"
    "（{{ .Alerts | len }}条）"
)


_ALERT_LINES = (
    ("情况说明", "description"), ("关键数据", "figures"), ("建议措施", "action"), ("预警编号", "alert_id"),
)
_BODY = (
    "{{ range .Alerts }}{{ .Annotations.summary }}\n"
    + "".join(f"{label}：{{{{ .Annotations.{key} }}}}\n" for label, key in _ALERT_LINES)
    + "\n{{ end }}（本邮件由 Alertmanager 按预算执行监控系统 budgetwatch 的预警发送，请勿直接回复。）\n"
)
_HTML = (
    "{{ range .Alerts }}<h3>{{ .Annotations.summary }}</h3><ul>"
    + "".join(f"<li><b>{label}</b>：{{{{ .Annotations.{key} }}}}</li>" for label, key in _ALERT_LINES)
    + "</ul>{{ end }}<p>（本邮件由 Alertmanager 按预算执行监控系统 budgetwatch 的预警发送，请勿直接回复。）</p>"
)


def build_config(
    directory: Directory,
    *,
    smtp_smarthost: str | None = None,
    smtp_from: str | None = None,
    smtp_username: str | None = None,
    smtp_password: str | None = None,
    smtp_require_tls: bool = False,
    group_wait: str = "30s",
    group_interval: str = "5m",
    repeat_interval: str = "4h",
    resolve_timeout: str = "5m",
) -> dict[str, Any]:
    """An alertmanager.yml (as a mapping) routing by ``department`` to the directory.

    Email receivers need an SMTP smarthost; without one they are left out.
    Critical alerts (the escalation severities) are also copied to the bureau
    (``continue: true``).
    """
    email = bool(smtp_smarthost)
    global_: dict[str, Any] = {"resolve_timeout": resolve_timeout}
    if email:
        global_["smtp_smarthost"] = smtp_smarthost
        global_["smtp_from"] = smtp_from or "budgetwatch@localhost"
        global_["smtp_require_tls"] = smtp_require_tls
        if smtp_username:
            global_["smtp_auth_username"] = smtp_username
        if smtp_password:
            global_["smtp_auth_password"] = smtp_password
    routes: list[dict[str, Any]] = []
    receivers: list[dict[str, Any]] = [_receiver("default", directory.default, email=email)]
    if directory.escalation is not None:
        severities = "|".join(directory.escalation.severities)
        routes.append(
            {
                "receiver": "escalation",
                "matchers": [f'severity=~"{severities}"'],
                "continue": True,
            }
        )
        receivers.append(_receiver("escalation", directory.escalation, email=email))
    for department_id in sorted(directory.departments):
        contact = directory.departments[department_id]
        name = receiver_name(department_id)
        routes.append({"receiver": name, "matchers": [_matcher("department", department_id)]})
        receivers.append(_receiver(name, contact, email=email))
    return {
        "global": global_,
        "route": {
            "receiver": "default",
            "group_by": ["alertname", "department"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
            "routes": routes,
        },
        "receivers": receivers,
        "inhibit_rules": INHIBIT_RULES,
    }
