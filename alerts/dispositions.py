"""The disposition loop (处置闭环): deadlines, dispositions, escalation, approval.

Pure (no I/O, no clock): days are ``date.toordinal()`` ints. A :class:`Desk`
rides on a :class:`alerts.monitor.Monitor` (``monitor.desk``) and sees, in
business-date order, the events of the log that concern it:

- when an alert fires (a new episode), it gets a deadline: the profile's
  ``disposition.deadline_working_days``-th working day after the firing day
  (weekends and the calendar's public holidays skipped, make-up working days
  counted: ``alerts.workdays``) and an escalation day, the next working day;
- ``alert_disposed`` records the department's answer (``continue``,
  ``reallocate``, ``reduce``, ``recover``, ``cancel``); a ``reduce``/``recover``
  larger than the project's unspent budget (budget − paid) is refused with a
  reason, and otherwise waits for the bureau (``awaiting_approval``);
- ``disposition_approved`` (the bureau) approves it — the desk emits a
  ``budget_adjusted`` event of the negative amount with the deterministic id
  ``{disposition_event_id}@budget_adjusted``, applied at once and handed to the
  runtime to be appended to the log — or returns it (``approved: false``);
- on the escalation day, an alert still firing and not answered becomes
  ``disposition_overdue``: one transition, once per episode, which the outbox
  routes to the bureau's escalation contact.

The state of each alert's current episode travels on the alert itself
(``Alert.disposition``, a dict replaced — never mutated — on each change), so it
is stored, restored and listed with the alert, and every change is a stored
transition (``disposed``, ``disposition_approved``, ``disposition_returned``,
``disposition_overdue``): the history is auditable.

Replays: the emitted ``budget_adjusted`` is in the log after the approval that
caused it; a replay regenerates it from the approval and skips the logged copy
(``Desk.generated``), so it counts once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alerts.lifecycle import FIRING, RESOLVED, Alert, AlertBook, Transition
from alerts.messages import yuan_text
from alerts.workdays import WEEKDAYS, WorkCalendar
from budget.calendar import iso, to_day
from budget.events import Record, parse_day, record_to_json_dict
from budget.money import fen_to_str, to_fen

if TYPE_CHECKING:
    from alerts.monitor import Monitor
    from budget.ledger import ProjectState

ALERT_DISPOSED = "alert_disposed"
DISPOSITION_APPROVED = "disposition_approved"
DISPOSITION_EVENT_TYPES = (ALERT_DISPOSED, DISPOSITION_APPROVED)
# Record types a monitor with a desk hands to it (budget_adjusted: to skip the logged
# copies of adjustments the desk generated itself).
DESK_TYPES = frozenset({ALERT_DISPOSED, DISPOSITION_APPROVED, "budget_adjusted"})

# Transition kinds of the loop (next to firing/escalated/deescalated/resolved).
DISPOSED = "disposed"
APPROVED_KIND = "disposition_approved"
RETURNED_KIND = "disposition_returned"
OVERDUE_KIND = "disposition_overdue"
DISPOSITION_KINDS = (DISPOSED, APPROVED_KIND, RETURNED_KIND, OVERDUE_KIND)

# Disposition statuses of an alert's current episode.
PENDING = "pending"  # 待处置
OVERDUE = "overdue"  # 逾期未处置 (escalated to the bureau)
DONE = "disposed"  # 已处置
AWAITING = "awaiting_approval"  # 待财政审批 (reduce / recover)
APPROVED = "approved"  # 已审批
RETURNED = "returned"  # 已退回 (the bureau returned a reduce / recover)
CLOSED = "closed"  # the alert ended (resolved, or its year closed) before the department answered
OPEN_STATUSES = (PENDING, OVERDUE, RETURNED)  # still waiting for the department
REFUSAL_HEADS = {"alert_disposed": "处置", "disposition_approved": "审批"}

STATUS_NAMES: dict[str, str] = {
    PENDING: "待处置",
    OVERDUE: "逾期未处置",
    DONE: "已处置",
    AWAITING: "待财政局审批",
    APPROVED: "已审批",
    RETURNED: "已退回",
    CLOSED: "预警已结束，无需处置",
}
ACTIONS = ("continue", "reallocate", "reduce", "recover", "cancel")
ACTION_NAMES: dict[str, str] = {
    "continue": "继续执行并说明原因",
    "reallocate": "调剂",
    "reduce": "调减",
    "recover": "收回",
    "cancel": "取消项目（不再实施）",
}
NEEDS_APPROVAL = ("reduce", "recover")


def adjustment_event_id(disposition_event_id: str) -> str:
    """The id of the budget_adjusted an approved disposition emits (deterministic)."""
    return f"{disposition_event_id}@budget_adjusted"


def deadlines(fired_on: int, working_days: int, calendar: WorkCalendar = WEEKDAYS) -> tuple[int, int]:
    """(deadline, escalation day) of an alert that fired on ``fired_on``: the
    ``working_days``-th working day after it, and the working day after that."""
    deadline = calendar.add_working_days(fired_on, working_days)
    return deadline, calendar.add_working_days(deadline, 1)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A disposition event that cannot be applied; it goes to the dead-letter store."""

    event_id: str
    reason: str
    raw: str  # the event as contract JSON


class Desk:
    """Disposition state machine of one monitor (see the module docstring)."""

    def __init__(self, deadline_working_days: int = 10, calendar: WorkCalendar = WEEKDAYS) -> None:
        self.deadline_working_days = deadline_working_days
        self.calendar = calendar
        self.due: dict[int, set[str]] = {}  # escalation day -> alert ids
        self.generated: set[str] = set()  # ids of budget_adjusted the desk emitted
        # alert id -> the adjustments its episodes caused, carried into each new episode
        # (kept here so a new episode of a resolved alert needs nothing from the store)
        self.adjustments: dict[str, list[str]] = {}
        # Drained by the runtime after each commit:
        self.refused: list[Refusal] = []
        self.emitted: list[Record] = []  # budget_adjusted to append to the log
        self._transitions: list[Transition] = []  # of dispositions applied today
        # fired-on day -> (deadline, escalation day): a day's firings share one count
        # through the holiday calendar (a checkpoint day fires thousands at once).
        self._deadlines: dict[int, tuple[int, int]] = {}

    # -- restoring ---------------------------------------------------------------
    def restore(self, alerts: Iterable[Alert], clock: int | None) -> None:
        for alert in alerts:
            state = alert.disposition
            if not state:
                continue
            if state.get("adjustments"):
                self.adjustments[alert.alert_id] = list(state["adjustments"])
                self.generated.update(state["adjustments"])
            # Scheduled whatever its status now, as in a run that never stopped: a
            # disposition awaiting approval may yet be returned before that day, and
            # _overdue decides on the day itself.
            if alert.status == FIRING:
                escalate = _day(state.get("escalate_on"))
                if escalate is not None and (clock is None or escalate > clock):
                    self.due.setdefault(escalate, set()).add(alert.alert_id)

    # -- events ------------------------------------------------------------------
    def take(self, record: Record, monitor: Monitor) -> Record | None:
        """Handle one record of DESK_TYPES; returns a record for the ledger, or None."""
        if record.type == "budget_adjusted":
            return None if record.event_id in self.generated else record
        clock = monitor.clock
        day = record.day if clock is None else max(record.day, clock)
        details = record.details or {}
        alert = monitor.book.get(str(details.get("alert_id", "")))
        if alert is None:
            self._refuse(record, f"预警 {details.get('alert_id')!r} 不存在（尚未触发，或编号有误）")
            return None
        if (alert.status != FIRING and record.type == ALERT_DISPOSED
                and (alert.disposition or {}).get("status") != AWAITING):
            # Its episode is over and nothing of it waits for the bureau: the board offers
            # no form for it, so a reduction recorded through the API or a file would
            # wait unseen. (One awaiting approval stays open to a revised answer and to the
            # bureau's decision after the alert resolved.)
            if monitor.year_closed(alert.fiscal_year, alert.updated_on):
                self._refuse(record, f"预警 {alert.alert_id} 已于 {iso(alert.updated_on)} 随 {alert.fiscal_year} "
                                     "年度结束而关闭，无需处置（新年度的情况由新年度的预警反映）；按该年度调减建议"
                                     "收回的资金，请以预算调整事件（budget_adjusted，负数）导入")
            else:
                self._refuse(record, f"预警 {alert.alert_id} 已于 {iso(alert.updated_on)} 解除，无需处置"
                                     "（情况再次出现时会产生新的预警）")
            return None
        if record.type == ALERT_DISPOSED:
            self._dispose(record, day, details, alert, monitor)
            return None
        return self._approve(record, day, details, alert, monitor)

    def _dispose(
        self, record: Record, day: int, details: Mapping[str, Any], alert: Alert, monitor: Monitor
    ) -> None:
        action = str(details.get("action"))
        amount = record.amount
        if action in NEEDS_APPROVAL:
            problem = self._unspent_problem(alert, amount or 0, monitor, action)
            if problem:
                self._refuse(record, problem)
                return
        state = dict(alert.disposition or {})
        deadline = _day(state.get("deadline"))
        latest: dict[str, Any] = {
            "event_id": record.event_id,
            "action": action,
            "amount": fen_to_str(amount) if amount is not None else None,
            "note": details.get("note"),
            "by": details.get("by"),
            "on": iso(day),
            "late": deadline is not None and day > deadline,
            "approval": None,
        }
        state["status"] = AWAITING if action in NEEDS_APPROVAL else DONE
        state["latest"] = latest
        alert.disposition = state
        amount_text = f" {yuan_text(fen_to_str(amount))}" if amount is not None else ""
        # A reduction or recovery is a proposal until the bureau approves it: "已处置" said done.
        done = "已提出处置意见" if action in NEEDS_APPROVAL else "已处置预警"
        pending = "（待财政局审批）" if action in NEEDS_APPROVAL else ""
        message = (
            f"{alert.department_name or alert.department_id}{done}：{ACTION_NAMES.get(action, action)}"
            f"{amount_text}{pending}。说明：{latest['note'] or '—'}（处置人：{latest['by'] or '—'}）"
        )
        follow = (
            "调减/收回须经财政局审批后生效，审批通过后自动调整预算。"
            if action in NEEDS_APPROVAL
            else "请财政局绩效科跟踪整改落实情况。"
        )
        self._transitions.append(Transition(alert.snapshot(message, follow), DISPOSED, day))

    def _approve(
        self, record: Record, day: int, details: Mapping[str, Any], alert: Alert, monitor: Monitor
    ) -> Record | None:
        state = dict(alert.disposition or {})
        latest = dict(state.get("latest") or {})
        target = details.get("disposition_event_id")
        if latest.get("event_id") != target or state.get("status") != AWAITING:
            current = STATUS_NAMES.get(str(state.get("status")), str(state.get("status")))
            self._refuse(
                record,
                f"预警 {alert.alert_id} 没有待审批的处置 {target!r}（当前处置状态：{current}）",
            )
            return None
        approved = bool(details.get("approved", True))
        emitted: Record | None = None
        approval: dict[str, Any] = {
            "event_id": record.event_id,
            "approved": approved,
            "by": details.get("by"),
            "note": details.get("note"),
            "on": iso(day),
            "adjustment_event_id": None,
        }
        if approved:
            amount = _fen(latest.get("amount"))
            problem = self._unspent_problem(alert, amount, monitor, str(latest.get("action")))
            if problem:
                self._refuse(record, problem)
                return None
            adjustment = adjustment_event_id(str(target))
            action_name = ACTION_NAMES.get(str(latest.get("action")), "调减")
            emitted = Record(
                "budget_adjusted", adjustment, day, alert.subject_id, -amount,
                {"reason": f"{action_name}（预警 {alert.alert_id} 处置 {target}，{approval['by'] or '财政局'}审批）"},
            )
            self.generated.add(adjustment)
            self.emitted.append(emitted)
            approval["adjustment_event_id"] = adjustment
            state["adjustments"] = [*(state.get("adjustments") or ()), adjustment]
            self.adjustments[alert.alert_id] = list(state["adjustments"])
            state["status"] = APPROVED
            kind = APPROVED_KIND
            message = f"财政局已审批{action_name}{yuan_text(latest.get('amount'))}，预算已相应调整。"
            follow = "请预算单位按调整后的预算执行。"
        else:
            state["status"] = RETURNED
            kind = RETURNED_KIND
            returned = ACTION_NAMES.get(str(latest.get("action")), "")
            deadline = _day(state.get("deadline"))
            if alert.status != FIRING:
                # The alert resolved while the reduction awaited the bureau: returned, it
                # leaves nothing to answer (a new answer would be refused).
                state["status"] = CLOSED
            elif deadline is None or day >= deadline:
                # Returned with no working day left to answer in: the department gets a
                # new deadline from the return, and escalates if it lets that pass too.
                deadline, escalate = deadlines(day, self.deadline_working_days, self.calendar)
                state["deadline"], state["escalate_on"] = iso(deadline), iso(escalate)
                self.due.setdefault(escalate, set()).add(alert.alert_id)
            message = f"财政局退回了处置（{returned}）：{approval['note'] or '—'}"
            follow = (f"请预算单位于 {state['deadline']} 前重新提出处置意见。" if state["status"] == RETURNED
                      else "预警已结束，无需重新处置。")
        latest["approval"] = approval
        state["latest"] = latest
        alert.disposition = state
        self._transitions.append(Transition(alert.snapshot(message, follow), kind, day))
        return emitted

    @staticmethod
    def _unspent_problem(alert: Alert, amount: int, monitor: Monitor, action: str) -> str | None:
        state = monitor.ledger.projects.get(alert.subject_id)
        return adjustment_problem(alert.subject_type, alert.subject_id, state, amount, action)

    def _refuse(self, record: Record, reason: str) -> None:
        raw = orjson_free_dumps(record_to_json_dict(record))
        # 处置：/审批： — the English event type led a reason people read on the board.
        self.refused.append(Refusal(record.event_id, f"{REFUSAL_HEADS.get(record.type, record.type)}：{reason}", raw))

    # -- closing a day -------------------------------------------------------------
    def close(self, day: int, fresh: bool, transitions: list[Transition], book: AlertBook) -> list[Transition]:
        """The day's transitions in order: dispositions applied today, the rules', then
        the escalations due today. New episodes get their deadlines here."""
        out = self._transitions
        self._transitions = []
        out.extend(transitions)
        for t in transitions:
            if t.kind == RESOLVED:
                self._close_unanswered(t, book)
            if t.kind != FIRING:
                continue
            alert = book.get(t.alert.alert_id)
            if alert is None:
                continue
            dates = self._deadlines.get(t.on)
            if dates is None:
                dates = self._deadlines[t.on] = deadlines(t.on, self.deadline_working_days, self.calendar)
            deadline, escalate = dates
            state: dict[str, Any] = {
                "status": PENDING,
                "deadline": iso(deadline),
                "escalate_on": iso(escalate),
                "working_days": self.deadline_working_days,
                "overdue_on": None,
                "latest": None,
            }
            adjustments = self.adjustments.get(alert.alert_id)
            if adjustments:
                state["adjustments"] = list(adjustments)
            alert.disposition = state
            t.alert.disposition = state
            self.due.setdefault(escalate, set()).add(alert.alert_id)
        if fresh:
            for alert_id in sorted(self.due.pop(day, ())):
                # Firing alerts are never forgotten: one missing from memory is resolved, not overdue.
                overdue = self._overdue(book.alerts.get(alert_id), day)
                if overdue is not None:
                    out.append(overdue)
        return out

    @staticmethod
    def _close_unanswered(t: Transition, book: AlertBook) -> None:
        """An alert resolved while its department still owed an answer: the episode is
        over, so it no longer reads as pending or 逾期未处置 (overdue_on stays as
        history). A reduction awaiting the bureau stays open (see take)."""
        alert = book.get(t.alert.alert_id)
        state = alert.disposition if alert is not None else None
        if alert is None or not state or state.get("status") not in OPEN_STATUSES:
            return
        alert.disposition = t.alert.disposition = {**state, "status": CLOSED}

    def _overdue(self, alert: Alert | None, day: int) -> Transition | None:
        if alert is None or alert.status != FIRING or not alert.disposition:
            return None
        state = alert.disposition
        if state.get("status") not in (PENDING, RETURNED) or state.get("escalate_on") != iso(day):
            return None
        state = {**state, "status": OVERDUE, "overdue_on": iso(day)}
        alert.disposition = state
        who = alert.department_name or alert.department_id
        subject = who if alert.subject_type == "department" else f"{who}「{alert.subject_name}」"
        message = (
            f"{subject}的预警（{iso(alert.since)}起）已超过处置期限 {state['deadline']}"
            f"（{state.get('working_days', self.deadline_working_days)}个工作日）仍未处置，已升级报财政局。"
        )
        follow = "请财政局绩效科督促预算单位立即处置；预算单位应尽快说明原因并提出整改措施。"
        return Transition(alert.snapshot(message, follow), OVERDUE_KIND, day)

    def drain(self) -> tuple[list[Refusal], list[Record]]:
        refused, emitted = self.refused, self.emitted
        self.refused, self.emitted = [], []
        return refused, emitted


def orjson_free_dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _day(value: Any) -> int | None:
    if not value:
        return None
    return to_day(parse_day(value))


def _fen(value: Any) -> int:
    return to_fen(value) if value is not None else 0


def disposition_view(alert: Mapping[str, Any]) -> dict[str, Any]:
    """Status of an alert JSON's disposition for people (board, CLI): adds Chinese names."""
    state = alert.get("disposition") or {}
    status = state.get("status")
    latest = state.get("latest") or None
    return {
        "status": status,
        "status_name": STATUS_NAMES.get(str(status), "—") if status else "—",
        "deadline": state.get("deadline"),
        "escalate_on": state.get("escalate_on"),
        "overdue": state.get("overdue_on") is not None,
        "overdue_on": state.get("overdue_on"),
        "latest": latest,
        "action_name": ACTION_NAMES.get(str(latest.get("action")), "") if latest else "",
    }


def adjustment_problem(
    subject_type: str, subject_id: str, state: ProjectState | None, amount: int, action: str
) -> str | None:
    """Why a reduce/recover of ``amount`` fen on this alert's subject cannot be applied to
    the project ``state`` (None when it can): the desk's refusal, and what `dispose`
    warns of beforehand."""
    name = ACTION_NAMES.get(action, action)
    if subject_type != "project":
        return f"部门整体预警不能直接{name}：请对具体项目的预警提出{name}"
    if state is None:
        return f"项目 {subject_id} 不在台账中"
    unspent = state.budget - state.paid
    if amount > unspent:
        return (
            f"{name}金额 {yuan_text(fen_to_str(amount))}超过项目 {subject_id} 的预算结余（未支付余额）"
            f"{yuan_text(fen_to_str(max(unspent, 0)))}（预算 {yuan_text(fen_to_str(state.budget))}，"
            f"已支付 {yuan_text(fen_to_str(state.paid))}）"
        )
    return None
