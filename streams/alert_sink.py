"""The notifier's store: ``budget-alerts`` messages kept as alerts, transitions and outbox.

The Faust workers publish alert transitions to Kafka; the notifier (``budgetwatch
notifier``) stores each one here, in the same tables the embedded engine writes, so
everything that reads those tables serves the distributed runtime unchanged: the
outbox dispatcher (department notifications, Alertmanager push), Grafana
annotations, ``budgetwatch alerts`` and ``outbox``.

Each message is stored in one SQLite transaction before its offset is acknowledged,
and its digest is kept, so a message delivered twice (a consumer restart, a worker
re-sending after a crash) is stored once; a malformed one goes to ``rejected`` with
its topic:partition:offset and reason, and the messages behind it go on.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from alerts.transition_message import MessageRefused, message_digest, parse_transition
from budget.calendar import to_day
from budget.events import parse_day
from streams.errors import StoreError
from streams.store import NOTIFIER_ROLE, ROLE_KEY, Store

STORED, DUPLICATE, REJECTED = "stored", "duplicate", "rejected"
OUTCOMES = (STORED, DUPLICATE, REJECTED)
TRANSITION_ONLY = ("transition", "date", "previous_severity", "origin")


@dataclass(slots=True)
class Received:
    outcome: str  # stored | duplicate | rejected
    alert_id: str | None = None
    reason: str | None = None


class AlertSink:
    def __init__(self, store: Store) -> None:
        claim_for_notifier(store)
        self.store = store

    def receive(self, value: bytes | None, *, source: str) -> Received:
        """Store one budget-alerts value (``source``: topic:partition:offset)."""
        if value is None:
            return self.reject(source, "a null value (a tombstone), not a transition", b"")
        try:
            transition, data = parse_transition(value)
        except MessageRefused as err:
            return self.reject(source, str(err), value)
        alert = transition.alert
        digest = message_digest(data)
        alert_row = {k: v for k, v in data.items() if k not in TRANSITION_ONLY}
        batch = self.store.begin(durable=True)  # acknowledged to Kafka once committed
        db = batch.db
        try:
            new = db.execute(
                "INSERT OR IGNORE INTO alert_messages(digest) VALUES (?)", (digest,)
            ).rowcount
            if not new:
                batch.rollback()
                return Received(DUPLICATE, alert.alert_id)
            stored = db.execute("SELECT data FROM alerts WHERE alert_id = ?", (alert.alert_id,)).fetchone()
            # A transition older than the alert's latest (re-sent out of order) joins the
            # history but is not notified: "firing" after the alert resolved would mislead.
            current = stored is None or _updated_on(stored[0]) <= transition.on
            if transition.kind != MOVED:  # a move is no transition: no history row, nothing to notify
                batch.add_transitions(
                    [(alert.alert_id, transition.on, transition.kind, alert.department_id,
                      orjson.dumps(data))],
                    notify=current,
                )
            if current:
                batch.add_alerts([alert_row])
            clock, seq = db.execute("SELECT clock, seq FROM cursor WHERE id = 1").fetchone()
        except BaseException:
            batch.rollback()
            raise
        # The business day of the alerts seen so far: the notification horizon and
        # `alerts` judge by it as they do by an engine's clock.
        batch.commit(projects=(), alerts=(), clock=max(clock or transition.on, transition.on), seq=seq)
        return Received(STORED, alert.alert_id)

    def reject(self, source: str, reason: str, value: bytes) -> Received:
        """Keep a message that cannot be stored in ``rejected``, with its source and reason."""
        raw = value.decode("utf-8", errors="replace")
        self.store.add_rejection_once(source, f"{reason}; the message was skipped", raw)
        return Received(REJECTED, reason=reason)


MOVED = "moved"


def _updated_on(data: str) -> int:
    """The day of a stored alert's latest transition: a transition re-sent out of order
    must not roll the alert back (the transitions table keeps every one either way)."""
    return to_day(parse_day(orjson.loads(data)["updated_on"]))


def claim_for_notifier(store: Store) -> None:
    """Mark a store as the notifier's, refusing one that holds an event log: the two
    kinds of store hold the same tables, and mixing them would mix two runtimes' alerts."""
    if store.is_notifier_store():
        return
    if store.event_count() or store.db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]:
        raise StoreError(
            f"{store.path} 是嵌入式引擎的数据库（已有事件或预警）；通知进程需要单独的数据库保存 "
            "budget-alerts：请让 --db（或 BUDGETWATCH_DB）指向一个新文件"
            "（an embedded engine's store; the notifier needs a store of its own）"
        )
    store.set_meta(ROLE_KEY, NOTIFIER_ROLE)
