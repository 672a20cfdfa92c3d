"""Alert transitions as Grafana annotations (grafana-client), DESIGN §8.

Each stored transition (new alert, severity change, resolution) becomes one
organisation-wide annotation at its business date, tagged ``budgetwatch``,
``rule:<rule>``, ``severity:<severity>``, ``department:<id>`` and the kind of
transition, so the dashboards show them as annotations (overview: every one;
department drill-down: that department's).

This module only turns a transition into an annotation and sends it through
an object with grafana-client's ``add_annotation`` signature; which
transitions to send, and remembering which were sent, is the runtime's job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from alerts.messages import SEVERITY_NAMES, kind_name
from budget.calendar import CHINA_TIME
from budget.events import parse_day

TAG = "budgetwatch"


class AnnotationError(Exception):
    """Grafana refused or could not be reached; the transition stays pending."""


class AnnotationsApi(Protocol):
    """What we use of ``grafana_client.GrafanaApi().annotations``."""

    def add_annotation(
        self,
        dashboard_id: Any = None,
        dashboard_uid: Any = None,
        panel_id: Any = None,
        time_from: Any = None,
        time_to: Any = None,
        tags: Any = None,
        text: Any = None,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Annotation:
    time_ms: int
    tags: list[str]
    text: str


def business_time_ms(date_text: str) -> int:
    """00:00 (UTC+8) of a business date, in epoch milliseconds."""
    day = parse_day(date_text)
    return int(dt.datetime.combine(day, dt.time(), CHINA_TIME).timestamp() * 1000)


def annotation_for(transition: Mapping[str, Any]) -> Annotation:
    """The annotation of one transition row (``budgetwatch alerts --all --json`` shape)."""
    kind = str(transition.get("transition", "firing"))
    rule = str(transition.get("rule", ""))
    severity = str(transition.get("severity", ""))
    department = str(transition.get("department_id", ""))
    subject = transition.get("subject_name") or transition.get("subject_id") or ""
    reason = transition.get("reason") if kind == "resolved" else None
    # Every kind named as notifications name it (a disposition step showed its English id).
    heading = f"【{kind_name(kind, reason)}·{SEVERITY_NAMES.get(severity, severity)}】{subject}"
    message = str(transition.get("message") or "")
    action = str(transition.get("action") or "")
    lines = [heading]
    if message:
        lines.append(message)
    if action and kind != "resolved":
        lines.append(f"建议：{action}")
    lines.append(f"规则 {rule}，预警编号 {transition.get('alert_id', '')}")
    tags = [TAG, kind, f"rule:{rule}", f"severity:{severity}", f"department:{department}"]
    if reason:
        tags.append(f"reason:{reason}")
    return Annotation(business_time_ms(str(transition["date"])), tags, "\n".join(lines))


class GrafanaAnnotator:
    """Sends transitions as annotations through grafana-client (or a stand-in)."""

    def __init__(self, api: AnnotationsApi, *, url: str = "") -> None:
        self.api = api
        self.url = url

    @classmethod
    def from_url(cls, url: str, token: str, *, timeout: float = 10.0) -> GrafanaAnnotator:
        from grafana_client.api import GrafanaApi

        client = GrafanaApi.from_url(url=url, credential=token or None, timeout=timeout)
        return cls(client.annotations, url=url)

    def annotate(self, transition: Mapping[str, Any]) -> Annotation:
        note = annotation_for(transition)
        try:
            self.api.add_annotation(time_from=note.time_ms, tags=note.tags, text=note.text)
        except Exception as err:  # grafana-client raises its own and niquests' errors
            raise AnnotationError(
                f"Grafana {self.url or ''} 写入预警注释失败（{type(err).__name__}: {err}）："
                "请检查 GRAFANA_URL 是否可访问、GRAFANA_TOKEN 是否有 annotations:write 权限；"
                "未写入的变化会在下次重试"
            ) from err
        return note
