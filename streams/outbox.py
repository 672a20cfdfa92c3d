"""Persistent delivery of alert notifications (at-least-once) and the Alertmanager push.

The engine writes one ``outbox`` row per alert transition in the same
transaction as the state. The dispatcher here:

1. **fans out** every outbox row to its recipients' channels — the department
   (or the directory's ``default`` when the department is not listed) and the
   bureau's ``escalation`` contact for its severities — as rows of
   ``deliveries``, one per (notification, recipient, channel), in one
   transaction with a marker in ``delivery_fanout``;
2. **delivers** them: first-in first-out per (recipient, channel); each attempt
   retries transient errors a few times at once (tenacity), then a failure is
   stored with its error and a persistent ``next_attempt`` (exponential
   backoff, capped) so an outage of hours loses nothing and survives restarts;
   after ``max_attempts`` a delivery becomes ``failed`` — still listed by
   ``budgetwatch outbox`` and re-queued by ``budgetwatch outbox --retry-failed``;
3. **pushes** active alerts to Alertmanager every interval (and at once when
   the set of active alerts changes), and ends resolved ones.

Dedup key: ``{alert_id}|{transition}|{date}[|n]|{recipient}|{channel}`` — the
same for every retry and for the same transition re-derived by a replay
(``run --rebuild``), so receivers can drop duplicates (header
``X-Budgetwatch-Dedup-Key``, webhook field ``dedup_key``, email Message-ID) and
a rebuild does not notify departments twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from alerts.lifecycle import RESOLVED, YEAR_CLOSED
from alerts.notification_text import compose_notification
from connectors.alertmanager import (
    AlertmanagerError,
    alert_labels,
    ended_series,
    firing_alert,
    post_alerts,
    resolved_alert,
)
from connectors.directory import CHANNELS, Directory, DirectoryError, load_directory
from connectors.notify import DeliveryError, Note
from connectors.notify.channels import channel_for
from connectors.notify.pacing import ROBOT_LIMITS, Window, recipients_of, robot_digest, robot_of
from connectors.notify.smtp import SendMail, SmtpSettings
from streams.errors import BudgetwatchError
from streams.links import alert_link
from streams.render import listed
from streams.settings import Settings
from streams.store import Store, business_day

log = logging.getLogger("budgetwatch.outbox")

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
NO_CHANNEL = "none"
REROUTE = "reroute"  # delivery_fanout.fingerprint of a row to route again (retry_failed)

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL UNIQUE,
    outbox_id INTEGER NOT NULL,
    alert_id TEXT NOT NULL,
    department_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    created_at REAL NOT NULL,
    delivered_at REAL,
    last_error TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries(status, recipient, channel, id);
CREATE INDEX IF NOT EXISTS deliveries_by_alert ON deliveries(alert_id);
CREATE TABLE IF NOT EXISTS delivery_fanout (
    outbox_id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL
);
-- Rows `outbox --retry-failed` marked to be routed again (their department had no channel).
CREATE INDEX IF NOT EXISTS delivery_fanout_reroute ON delivery_fanout(outbox_id) WHERE fingerprint = 'reroute';
-- A robot that said "too fast" refuses everything until refused_until (unix seconds);
-- kept so a restarted dispatcher does not post into the block. Keyed by a digest of
-- the robot's address, which holds its access token.
CREATE TABLE IF NOT EXISTS robot_refusals (
    robot TEXT PRIMARY KEY,
    refused_until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alertmanager_sent (
    alert_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    labels TEXT NOT NULL,
    data TEXT NOT NULL,
    sent_at REAL NOT NULL
);
"""

# Outbox rows not yet fanned out, with the fingerprint of their content and the
# occurrence number of the same (alert, transition, date) — stable under replay.
_UNFANNED = """
SELECT x.id, x.department_id, x.payload, x.fp, x.n, f.fingerprint FROM (
    SELECT o.id, o.department_id, t.data AS payload,
           o.alert_id || '|' || o.kind || '|'
               || COALESCE(json_extract(t.data, '$.date'), '') AS fp,
           ROW_NUMBER() OVER (
               PARTITION BY o.alert_id, o.kind, json_extract(t.data, '$.date') ORDER BY o.id
           ) - 1 AS n
    FROM outbox o JOIN transitions t ON t.id = o.transition_id
) x LEFT JOIN delivery_fanout f ON f.outbox_id = x.id
WHERE f.outbox_id IS NULL OR f.fingerprint != x.fp
ORDER BY x.id
"""

T = TypeVar("T")


class NotifyConfigError(BudgetwatchError):
    """The department directory or the notification settings cannot be used."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    tries: int = 3  # immediate tries per attempt (tenacity), transient errors only
    wait: float = 0.5  # first pause between immediate tries, doubled, at most wait_max
    wait_max: float = 5.0
    backoff: float = 30.0  # persistent: next attempt after backoff * 2**(attempts-1) ...
    backoff_max: float = 3600.0  # ... at most this
    max_attempts: int = 20  # then the delivery is `failed` (kept, listed, re-queueable)
    per_target: int = 50  # deliveries per (recipient, channel) per round
    concurrency: int = 8  # targets served at once

    def delay(self, attempts: int) -> float:
        return float(min(self.backoff * 2 ** max(attempts - 1, 0), self.backoff_max))


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    dedup_key: str
    outbox_id: int
    recipient: str
    channel: str
    status: str
    attempts: int
    next_attempt: float
    payload: dict[str, Any]


@dataclass(slots=True)
class DispatchStats:
    fanned_out: int = 0  # outbox rows routed
    created: int = 0  # deliveries created
    delivered: int = 0
    failed_attempts: int = 0  # attempts that failed (will be retried)
    gave_up: int = 0  # deliveries that reached max_attempts (status failed)
    alertmanager_pushed: int = 0  # alerts sent to Alertmanager
    skipped_historical: int = 0  # transitions older than the horizon: routed to nobody
    skipped_year_closed: int = 0  # alerts ended by their fiscal year's close: routed to nobody
    paced: int = 0  # (recipient, channel) queues held back this round: their robot's minute is full
    held: bool = False  # new transitions wait: their source is still catching up (Dispatcher.hold)
    busy: bool = False  # another process dispatches this store: this round sent nothing
    alertmanager_error: str | None = None
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class DispatchLock:
    """One dispatcher per store: two (``deliver`` and a ``deliver --once`` beside it,
    or ``serve`` and ``deliver``) sent every notification twice, and a group robot cannot
    drop duplicates. An advisory lock on a file beside the store (released by the kernel
    when the process ends, even by kill -9); it names the process that holds it."""

    def __init__(self, store_path: str) -> None:
        # Beside the real file: serve on data/bw.db and deliver on a symlink to it took
        # two locks and sent every notification twice.
        self.path = f"{os.path.realpath(store_path)}.dispatch.lock"
        self._file: Any = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def holder(self) -> str:
        try:
            return Path(self.path).read_text(encoding="utf-8").strip() or "?"
        except OSError:
            return "?"


class DeliveryLog:
    """The dispatcher's tables, on its own SQLite connection to the store file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Store(self.path).close()  # the store's own tables (outbox, alerts) and WAL mode
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)
        self._signature: tuple[int, int, int, int | None] | None = None

    def close(self) -> None:
        self.db.close()

    # -- fan-out ---------------------------------------------------------
    def fan_out(
        self, directory: Directory, now: float, *, horizon_days: int = 0
    ) -> tuple[int, int, int, int]:
        """Route new outbox rows to deliveries. Returns (outbox rows routed, deliveries
        created, rows skipped as history, rows of a year's close — routed to nobody).

        With ``horizon_days``, history is not news: a transition dated more than that many
        days before the store's business day (:func:`streams.store.business_day`, where
        the engine's run is heading) is routed to nobody — importing last spring's
        payments in October must not send departments months of stale warnings — unless
        it belongs to the episode of its alert still firing (it carries the alert's
        current ``since``): its department has never been told, and hears of it now. A later
        step (resolved, escalated, an overdue disposition) of an alert whose department
        was never told is history too. While a run is still heading past the
        committed clock (a backfill between its commits), the old rows of alerts firing
        so far wait, in order: the run may yet resolve them. Skipped rows stay in
        ``alerts --all``; a row is judged once, when it is routed."""
        db = self.db
        count, top, fanned, committed = db.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0),"
            f" (SELECT COUNT(*) FROM delivery_fanout WHERE fingerprint = '{REROUTE}'),"
            " (SELECT clock FROM cursor WHERE id = 1) FROM outbox"
        ).fetchone()
        # fanned: rows retry_failed marked; committed: waiting rows are judged again as a run goes on
        signature = (int(count), int(top), int(fanned), committed)
        if signature == self._signature:
            return 0, 0, 0, 0
        rows = db.execute(_UNFANNED).fetchall()
        heading = business_day(db) if horizon_days > 0 else None
        oldest = None if heading is None else dt.date.fromordinal(heading - horizon_days).isoformat()
        firing: dict[str, str] = {}  # alert -> the day its current episode started
        catching_up = False
        if oldest is not None and rows:
            firing = dict(db.execute(
                "SELECT alert_id, json_extract(data, '$.since') FROM alerts WHERE status = 'firing'"
            ).fetchall())
            catching_up = heading is not None and (committed is None or committed < heading)
        waiting: set[str] = set()  # alerts whose rows wait for the run to end (kept in order)
        waited = created = skipped = year_closed = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for outbox_id, department_id, payload, fingerprint, n, previous in rows:
                transition = orjson.loads(payload)
                alert_id = transition["alert_id"]
                if transition["transition"] == RESOLVED and transition.get("reason") == YEAR_CLOSED:
                    # The year's close (年度结束) asks nothing of anyone: a department told of
                    # each alert ending with its year would read of a warning "lifted" that was
                    # not. It stays in `alerts --all`, and Alertmanager ends it.
                    year_closed += 1
                    self._mark_fanned(outbox_id, fingerprint)
                    continue
                # A row routed again on request is not history, however old it is by now.
                if previous != REROUTE and oldest is not None:
                    date = transition.get("date", oldest)
                    old = date < oldest
                    # Of the episode still firing, by the `since` each row carries: an
                    # earlier episode, resolved since (even on the day the next began), is
                    # history like any other — it was sent as news, and again after
                    # `run --rebuild`, while the alert fired anew.
                    since = firing.get(alert_id)
                    own = transition.get("since")
                    ongoing = since is not None and (own == since if own is not None else date >= since)
                    if alert_id in waiting or (old and catching_up and ongoing):
                        waiting.add(alert_id)
                        waited += 1
                        continue
                    if (old and not ongoing) or (not old and self._never_told(transition)):
                        skipped += 1
                        self._mark_fanned(outbox_id, fingerprint)
                        continue
                base = fingerprint if not n else f"{fingerprint}|{n}"
                common = (
                    outbox_id,
                    alert_id,
                    department_id,
                    transition["transition"],
                )
                for recipient, contact in directory.recipients(transition):
                    channels = contact.channels() if contact is not None else []
                    if not channels:
                        if recipient == "default":
                            error = (
                                f"部门 {department_id} 不在部门目录中，"
                                "目录也没有配置带通道的 default；"
                                "请为该部门或 default 配置 webhook/dingtalk/wecom/email"
                            )
                        else:
                            error = (
                                f"部门 {recipient} 在部门目录中没有任何通知通道；"
                                "请为其配置 webhook/dingtalk/wecom/email"
                            )
                        created += self._insert(
                            base, recipient, NO_CHANNEL, common, FAILED, now, payload, error
                        )
                    for channel in channels:
                        created += self._insert(
                            base, recipient, channel, common, PENDING, now, payload, None
                        )
                self._mark_fanned(outbox_id, fingerprint)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._signature = signature
        return len(rows) - waited, created, skipped, year_closed

    def _never_told(self, transition: dict[str, Any]) -> bool:
        """A step after the first of an alert whose department has no delivery of it."""
        if transition.get("transition") == "firing":
            return False
        told = self.db.execute(
            "SELECT 1 FROM deliveries WHERE alert_id = ? LIMIT 1", (transition["alert_id"],)
        ).fetchone()
        return told is None

    def _mark_fanned(self, outbox_id: int, fingerprint: str) -> None:
        self.db.execute(
            "INSERT INTO delivery_fanout(outbox_id, fingerprint) VALUES (?, ?)"
            " ON CONFLICT(outbox_id) DO UPDATE SET fingerprint = excluded.fingerprint",
            (outbox_id, fingerprint),
        )

    def _insert(
        self,
        base: str,
        recipient: str,
        channel: str,
        common: tuple[int, str, str, str],
        status: str,
        now: float,
        payload: str,
        error: str | None,
    ) -> int:
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO deliveries(dedup_key, outbox_id, alert_id, department_id, kind,"
            " recipient, channel, status, attempts, next_attempt, created_at, last_error, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (
                f"{base}|{recipient}|{channel}",
                *common,
                recipient,
                channel,
                status,
                now,
                now,
                error,
                payload,
            ),
        )
        return cursor.rowcount

    # -- delivery --------------------------------------------------------
    def pending_by_target(self, per_target: int) -> dict[tuple[str, str], list[Delivery]]:
        """Pending deliveries, oldest first, at most ``per_target`` per (recipient, channel)."""
        rows = self.db.execute(
            "SELECT id, dedup_key, outbox_id, recipient, channel, status, attempts, next_attempt,"
            " payload"
            " FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY recipient, channel ORDER BY id) AS rn"
            "       FROM deliveries WHERE status = ?)"
            " WHERE rn <= ? ORDER BY id",
            (PENDING, per_target),
        ).fetchall()
        groups: dict[tuple[str, str], list[Delivery]] = {}
        for row in rows:
            d = Delivery(
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], orjson.loads(row[8])
            )
            groups.setdefault((d.recipient, d.channel), []).append(d)
        return groups

    def delivered(self, delivery_id: int, now: float) -> None:
        self.db.execute(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1, delivered_at = ?,"
            " last_error = NULL"
            " WHERE id = ?",
            (DELIVERED, now, delivery_id),
        )

    def attempt_failed(
        self,
        delivery: Delivery,
        now: float,
        error: str,
        policy: RetryPolicy,
        *,
        final: bool = False,
        at_least: float | None = None,
    ) -> str:
        attempts = delivery.attempts + 1
        status = FAILED if final or attempts >= policy.max_attempts else PENDING
        delay = max(policy.delay(attempts), at_least or 0.0)  # a receiver's Retry-After, if longer
        self.db.execute(
            "UPDATE deliveries SET status = ?, attempts = ?, next_attempt = ?, last_error = ?"
            " WHERE id = ?",
            (status, attempts, now + delay, error[:2000], delivery.id),
        )
        return status

    def delivered_since(self, recipients: list[str], channel: str, since: float) -> list[float]:
        """When deliveries to these recipients' ``channel`` went out after ``since``."""
        if not recipients:
            return []
        marks = ",".join("?" for _ in recipients)
        return [
            float(at)
            for (at,) in self.db.execute(
                "SELECT delivered_at FROM deliveries WHERE status = ? AND channel = ?"
                f" AND recipient IN ({marks}) AND delivered_at > ?",
                (DELIVERED, channel, *recipients, since),
            )
        ]

    def refused_until(self, robot: str) -> float:
        """Until when the robot with this digest refuses messages (0: it does not)."""
        row = self.db.execute("SELECT refused_until FROM robot_refusals WHERE robot = ?", (robot,)).fetchone()
        return float(row[0]) if row is not None else 0.0

    def robot_refused(self, robot: str, until: float) -> None:
        self.db.execute(
            "INSERT INTO robot_refusals(robot, refused_until) VALUES (?, ?) ON CONFLICT(robot)"
            " DO UPDATE SET refused_until = MAX(refused_until, excluded.refused_until)",
            (robot, until),
        )

    def retry_failed(self) -> int:
        """Re-queue failed deliveries, due at once (after fixing the directory or the receiver).

        A transition that had nowhere to go (channel ``none``: its department was not in
        the directory) is routed again, by the directory the dispatcher has then: its
        ``none`` rows go and its outbox row is marked unrouted (deliveries it already
        has keep their keys, so nothing is sent twice)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            requeued = db.execute(
                "UPDATE deliveries SET status = ?, attempts = 0, next_attempt = 0"
                " WHERE status = ? AND channel != ?",
                (PENDING, FAILED, NO_CHANNEL),
            ).rowcount
            unrouted = [outbox_id for (outbox_id,) in db.execute(
                "SELECT DISTINCT outbox_id FROM deliveries WHERE status = ? AND channel = ?",
                (FAILED, NO_CHANNEL),
            )]
            db.execute("DELETE FROM deliveries WHERE status = ? AND channel = ?", (FAILED, NO_CHANNEL))
            db.executemany("UPDATE delivery_fanout SET fingerprint = ? WHERE outbox_id = ?",
                           [(REROUTE, i) for i in unrouted])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._signature = None
        return requeued + len(unrouted)

    # -- reading ---------------------------------------------------------
    def alert_departments(self) -> list[str]:
        return [d for (d,) in self.db.execute("SELECT DISTINCT department_id FROM alerts ORDER BY 1")]

    def summary(self) -> dict[str, dict[str, int]]:
        """{channel: {status: count}} over every delivery."""
        found: dict[str, dict[str, int]] = {}
        for channel, status, count in self.db.execute(
            "SELECT channel, status, COUNT(*) FROM deliveries GROUP BY channel, status"
        ):
            found.setdefault(channel, {s: 0 for s in STATUSES})[status] = int(count)
        return found

    def backlog(self) -> int:
        """Outbox rows not yet fanned out."""
        return int(
            self.db.execute(
                "SELECT COUNT(*) FROM outbox o LEFT JOIN delivery_fanout f ON f.outbox_id = o.id"
                " WHERE f.outbox_id IS NULL"
            ).fetchone()[0]
        )

    def rows(self, statuses: tuple[str, ...], limit: int | None = None) -> list[dict[str, Any]]:
        marks = ",".join("?" for _ in statuses)
        query = (
            "SELECT id, dedup_key, outbox_id, alert_id, department_id, kind, recipient, channel,"
            " status,"
            " attempts, next_attempt, created_at, delivered_at, last_error"
            f" FROM deliveries WHERE status IN ({marks}) ORDER BY id"
        )
        args: list[Any] = list(statuses)
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        names = (
            "id",
            "dedup_key",
            "outbox_id",
            "alert_id",
            "department_id",
            "transition",
            "recipient",
            "channel",
            "status",
            "attempts",
            "next_attempt",
            "created_at",
            "delivered_at",
            "last_error",
        )
        out = []
        for row in self.db.execute(query, args):
            item = dict(zip(names, row, strict=True))
            for key in ("next_attempt", "created_at", "delivered_at"):
                if item[key] is not None:
                    moment = dt.datetime.fromtimestamp(item[key], dt.UTC)
                    item[key] = moment.isoformat(timespec="seconds")
            if item["status"] != PENDING:
                item["next_attempt"] = None
            out.append(item)
        return out

    # -- Alertmanager ----------------------------------------------------
    def firing_severities(self) -> dict[str, str]:
        return {
            a: s
            for a, s in self.db.execute(
                "SELECT alert_id, json_extract(data, '$.severity') FROM alerts"
                " WHERE status = 'firing'"
            )
        }

    def sent_firing(self) -> dict[str, tuple[str, dict[str, str], dict[str, Any]]]:
        """Alerts last pushed as firing: {alert_id: (severity, labels, alert)}."""
        return {
            a: (s, orjson.loads(labels), orjson.loads(data))
            for a, s, labels, data in self.db.execute(
                "SELECT alert_id, severity, labels, data FROM alertmanager_sent"
                " WHERE status = 'firing'"
            )
        }

    def alerts(self, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        if ids is None:
            query = "SELECT alert_id, data FROM alerts WHERE status = 'firing'"
            return {a: orjson.loads(d) for a, d in self.db.execute(query)}
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" for _ in chunk)
            for a, d in self.db.execute(
                f"SELECT alert_id, data FROM alerts WHERE alert_id IN ({marks})", chunk
            ):
                found[a] = orjson.loads(d)
        return found

    def record_pushed(self, firing: list[dict[str, Any]], ended: list[str], now: float) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO alertmanager_sent(alert_id, status, severity, labels, data, sent_at)"
                " VALUES (?, 'firing', ?, ?, ?, ?)"
                " ON CONFLICT(alert_id) DO UPDATE SET status = 'firing',"
                " severity = excluded.severity, labels = excluded.labels, data = excluded.data,"
                " sent_at = excluded.sent_at",
                [
                    (
                        a["alert_id"],
                        a["severity"],
                        orjson.dumps(alert_labels(a)).decode(),
                        orjson.dumps(a).decode(),
                        now,
                    )
                    for a in firing
                ],
            )
            db.executemany(
                "UPDATE alertmanager_sent SET status = 'resolved', sent_at = ? WHERE alert_id = ?",
                [(now, a) for a in ended],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _reachable(directory: Directory, department_id: str) -> bool:
    """Whether fan-out finds a channel for the department (its own, else the default's)."""
    _, contact = directory.route(department_id)
    return contact is not None and bool(contact.channels())


class Dispatcher:
    """Fans the outbox out to the channels, delivers with retries, pushes to Alertmanager.

    ``serve`` starts it with::

        dispatcher = Dispatcher.from_settings(store, settings)
        task = asyncio.create_task(dispatcher.run_forever(stop_event))

    Without a directory (``BUDGETWATCH_DEPARTMENTS`` unset) nothing is fanned
    out — the outbox keeps every transition and is routed once a directory is
    configured; without ``BUDGETWATCH_ALERTMANAGER_URL`` nothing is pushed.
    """

    def __init__(
        self,
        db_path: str | Path,
        directory: Directory | None,
        *,
        client: httpx.AsyncClient | None = None,
        smtp: SmtpSettings | None = None,
        send_mail: SendMail | None = None,
        alertmanager_url: str | None = None,
        alertmanager_interval: float = 60.0,
        board_url: str | None = None,
        policy: RetryPolicy | None = None,
        poll_interval: float = 2.0,
        clock: Callable[[], dt.datetime] = utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        timeout: float = 10.0,
        horizon_days: int = 0,
    ) -> None:
        self.log = DeliveryLog(db_path)
        self.horizon_days = horizon_days  # see DeliveryLog.fan_out; 0: every transition
        self.directory = directory
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(timeout=timeout)
        self.smtp = smtp
        self.send_mail = send_mail
        self.alertmanager_url = alertmanager_url
        self.alertmanager_interval = alertmanager_interval
        self.board_url = board_url  # the board's public address: each pushed alert links to its page
        self.policy = policy or RetryPolicy()
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        self._loop: asyncio.AbstractEventLoop | None = None  # the one _lock and _mail_gate belong to
        self._lock = asyncio.Lock()
        self._am_next: float | None = None  # wall time of the next periodic push
        self._am_sent: dict[str, str] | None = None  # alert_id -> severity last pushed
        self.wake: asyncio.Event | None = None  # set by the engine after new transitions
        # While this says so, new transitions wait: no fan-out, no Alertmanager push (the
        # notifier reading a backlog, whose business clock has not yet reached today's).
        self.hold: Callable[[], bool] | None = None
        # (channel, robot address) -> its recent sends (connectors.notify.pacing)
        self._windows: dict[tuple[str, str], Window] = {}
        # (recipient, channel) -> the task sending its current batch (see run_once)
        self._sending: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._mail_gate = asyncio.Semaphore(self.policy.concurrency)
        self._dispatch_lock = DispatchLock(self.log.path)
        self._busy_logged = False
        if directory is not None:
            self._warn_unlisted(directory)

    @classmethod
    def from_settings(
        cls,
        store: Store | str | Path,
        settings: Settings,
        *,
        directory: Directory | None = None,
        **overrides: Any,
    ) -> Dispatcher:
        """Build from the settings (env BUDGETWATCH_*); a bad directory raises DirectoryError."""
        path = store.path if isinstance(store, Store) else str(store)
        if directory is None and settings.departments:
            directory = load_directory(settings.departments)
        smtp = None
        if settings.smtp_host:
            smtp = SmtpSettings(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                username=settings.smtp_user,
                password=settings.smtp_password,
                starttls=settings.smtp_starttls,
                tls=settings.smtp_tls,
                timeout=settings.notify_timeout,
            )
        options: dict[str, Any] = {
            "smtp": smtp,
            "alertmanager_url": settings.alertmanager_url,
            "alertmanager_interval": settings.alertmanager_interval,
            "board_url": settings.board_url,
            "poll_interval": settings.deliver_interval,
            "timeout": settings.notify_timeout,
            "horizon_days": settings.notify_horizon_days,
            "policy": RetryPolicy(
                backoff=settings.delivery_backoff,
                backoff_max=settings.delivery_backoff_max,
                max_attempts=settings.delivery_max_attempts,
            ),
        }
        options.update(overrides)
        return cls(path, directory, **options)

    def _warn_unlisted(self, directory: Directory) -> None:
        """A department the store has alerts for that the directory cannot reach (a typo
        such as D0101 for D101, and no default): said when the dispatcher starts, not
        found weeks later as failed deliveries on channel none."""
        unlisted = [d for d in self.log.alert_departments() if not _reachable(directory, d)]
        if unlisted:
            log.warning(
                "部门目录中没有这些部门的通知通道，目录也没有带通道的 default：%s（共 %d 个）；它们的预警通知"
                "会记为投递失败。请检查部门编码后运行 `budgetwatch outbox --retry-failed`"
                "（departments with alerts that the directory cannot reach）", listed(unlisted), len(unlisted),
            )

    @property
    def enabled(self) -> bool:
        return self.directory is not None or bool(self.alertmanager_url)

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a SQLite call off the event loop (the engine may hold the write lock).

        A cancelled caller (a queue's task at shutdown) does not stop the call in its
        thread: the lock is held until that ends, so the connection is neither used by
        two threads at once nor closed under a running call (which can crash the process)."""
        self._bind_to_loop()
        async with self._lock:
            call = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                while not call.done():  # however often it is cancelled meanwhile
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait({call})
                if not call.cancelled():
                    call.exception()  # retrieved: the caller is told it was cancelled
                raise

    async def aclose(self) -> None:
        if self._own_client:
            await self.client.aclose()
        self._bind_to_loop()
        async with self._lock:  # after the call in progress, if any (see _db)
            self.log.close()

    # -- one round -------------------------------------------------------
    async def run_once(self, now: dt.datetime | None = None, *, wait: bool = True) -> DispatchStats:
        """Fan out new transitions, send what is due, push to Alertmanager when due.

        Each (recipient, channel) queue sends in a task of its own. With ``wait`` (one
        round: ``deliver --once``, tests) the round ends when they are done; the loop does
        not wait, so a receiver that hangs or answers slowly holds its own queue only,
        while the next rounds serve every other queue (a queue still sending is not
        started twice)."""
        now = now or self.clock()
        stats = DispatchStats()
        ts = now.timestamp()
        started = time.monotonic()

        def moment() -> float:
            # The round's time plus what it has taken so far: a robot's window counts each
            # message when it goes, not when the round began (a round of 20 takes seconds).
            return ts + (time.monotonic() - started)

        if not self._dispatch_lock.acquire():
            message = (
                f"另一个投递进程（pid {self._dispatch_lock.holder()}）正在投递 {self.log.path} 的通知：同一个"
                "数据库同时只能有一个投递进程，否则每条通知都会发两次。请等它结束，或不要在 serve、"
                "notifier 或不带 --once 的 deliver（持续投递）运行时再运行 deliver --once"
                "（another dispatcher holds this store: serve, notifier or deliver without --once）"
            )
            if wait:
                raise NotifyConfigError(message)
            if not self._busy_logged:
                log.warning(message)
                self._busy_logged = True
            stats.busy = True
            return stats
        self._busy_logged = False
        try:
            return await self._round(now, stats, moment, wait=wait)
        finally:
            if wait:
                self._dispatch_lock.release()

    async def _round(
        self, now: dt.datetime, stats: DispatchStats, moment: Callable[[], float], *, wait: bool
    ) -> DispatchStats:
        ts = now.timestamp()
        stats.held = self.hold is not None and self.hold()
        if self.directory is not None:
            if not stats.held:
                (stats.fanned_out, stats.created, stats.skipped_historical,
                 stats.skipped_year_closed) = await self._db(
                    self.log.fan_out, self.directory, ts, horizon_days=self.horizon_days
                )
            if stats.skipped_historical:
                log.info(
                    "%d transitions were history (more than %d days before the business clock and "
                    "resolved since, or of an alert never announced): not notified; they stay in "
                    "alerts --all",
                    stats.skipped_historical, self.horizon_days,
                )
            if stats.skipped_year_closed:
                log.info(
                    "%d transitions ended alerts with their fiscal year (年度结束): not notified; "
                    "they stay in alerts --all", stats.skipped_year_closed,
                )
            groups = await self._db(self.log.pending_by_target, self.policy.per_target)
            for target, rows in groups.items():
                if target in self._sending:
                    continue  # its last batch is still going out (a slow receiver)
                task = asyncio.create_task(self._serve_queue(rows, now, stats, moment))
                self._sending[target] = task
                task.add_done_callback(partial(self._done_sending, target))
            if wait:
                await self.settle()
            if stats.paced:
                log.info(
                    "%d queues wait for their robot's rate limit (20 messages a minute); "
                    "they go on in the next rounds", stats.paced,
                )
        if self.alertmanager_url:
            if not stats.held:
                if await self._am_due(ts):
                    await self._push(now, stats)
            elif self._am_next is None or ts >= self._am_next:
                await self._keep_alive(now, stats)
        return stats

    def _bind_to_loop(self) -> None:
        """asyncio primitives belong to one event loop; a dispatcher driven round by round
        from new loops (asyncio.run per round) gets fresh ones, once nothing is sending."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop and not self._sending:
            self._loop = loop
            self._lock = asyncio.Lock()
            self._mail_gate = asyncio.Semaphore(self.policy.concurrency)

    def _done_sending(self, target: tuple[str, str], _task: asyncio.Task[None]) -> None:
        self._sending.pop(target, None)

    async def settle(self) -> None:
        """Until every queue started so far has finished its batch."""
        while self._sending:
            await asyncio.gather(*list(self._sending.values()), return_exceptions=True)

    async def _serve_queue(
        self, rows: list[Delivery], now: dt.datetime, stats: DispatchStats, moment: Callable[[], float]
    ) -> None:
        # One mail server for every address: a few sessions at once, not one per queue.
        gate = self._mail_gate if rows[0].channel == "email" else contextlib.nullcontext()
        try:
            async with gate:
                await self._send_group(rows, now, stats, moment)
        except Exception:  # a store error: this queue waits for the next round
            log.exception("通知队列 %s/%s 出错，将在下一轮重试", rows[0].recipient, rows[0].channel)

    async def _send_group(
        self, rows: list[Delivery], now: dt.datetime, stats: DispatchStats, moment: Callable[[], float]
    ) -> None:
        """Oldest first; stop at the first delivery not yet due, failing or held back by
        its robot's rate limit (keeps order; a held delivery costs no attempt)."""
        ts = now.timestamp()
        for delivery in rows:
            if delivery.next_attempt > ts:
                return
            window = await self._window(delivery, ts)
            sent_at = moment()
            if window is not None and not window.take(sent_at):
                stats.paced += 1
                return
            if not await self._deliver(delivery, now, stats, sent_at, window):
                return

    async def _window(self, delivery: Delivery, ts: float) -> Window | None:
        """The send window of the robot this delivery posts to (None: not a robot). A new
        one starts from the deliveries of the last minute, so a restart does not send a
        robot a second minute's worth."""
        assert self.directory is not None
        limit = ROBOT_LIMITS.get(delivery.channel)
        robot = robot_of(self.directory.contact(delivery.recipient), delivery.channel)
        if limit is None or robot is None:
            return None
        key = (delivery.channel, robot)
        window = self._windows.get(key)
        if window is None:
            recipients = recipients_of(self.directory, delivery.channel, robot)
            sent = await self._db(self.log.delivered_since, recipients, delivery.channel, ts - limit.seconds)
            refused_until = await self._db(self.log.refused_until, robot_digest(*key))
            window = self._windows.setdefault(key, Window.seeded(limit, sent, refused_until))
        return window

    async def _deliver(
        self,
        delivery: Delivery,
        now: dt.datetime,
        stats: DispatchStats,
        sent_at: float,
        window: Window | None,
    ) -> bool:
        """One delivery; ``sent_at`` (when it went, within the round) is recorded as its
        delivered_at, which seeds a robot's window after a restart. To a paced robot
        (``window``) it is one post, with no immediate retries: each would be a message
        the window did not count (a timed-out post has often arrived), and a "too fast"
        answer closes the window for as long as the robot refuses."""
        ts = now.timestamp()
        assert self.directory is not None
        contact = self.directory.contact(delivery.recipient)
        channel = None
        if contact is not None:
            channel = channel_for(
                contact,
                delivery.channel,
                client=self.client,
                smtp=self.smtp,
                send_mail=self.send_mail,
            )
        if channel is None:
            error = (
                f"部门目录中已没有 {delivery.recipient} 的 {delivery.channel} 通道；"
                "恢复目录配置后运行 `budgetwatch outbox --retry-failed`"
            )
            await self._db(self.log.attempt_failed, delivery, ts, error, self.policy, final=True)
            stats.gave_up += 1
            stats.errors.append(f"{delivery.dedup_key}: {error}")
            return True  # nothing to wait for: do not block the rest of the queue
        audience = (
            delivery.recipient if delivery.recipient in ("default", "escalation") else "department"
        )
        note = Note(
            dedup_key=delivery.dedup_key,
            transition=delivery.payload,
            text=compose_notification(
                delivery.payload, audience=audience, reference=delivery.dedup_key
            ),
            now=now,
            recipient=delivery.recipient,
        )
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(1 if window is not None else self.policy.tries),
                wait=wait_exponential(multiplier=self.policy.wait, max=self.policy.wait_max),
                retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.retry_now),
                sleep=self.sleep,
                reraise=True,
            ):
                with attempt:
                    await channel.send(note)
        except Exception as err:  # a failed attempt never stops the dispatcher
            # Anything but a DeliveryError is a defect that the next attempt would meet
            # again; retried, it would hold the recipient's queue behind it for hours.
            unexpected = not isinstance(err, DeliveryError)
            set_aside = unexpected or (isinstance(err, DeliveryError) and err.final)
            if window is not None and isinstance(err, DeliveryError) and err.rate_limited:
                window.refused(sent_at)
                robot = robot_of(contact, delivery.channel)
                if robot is not None:
                    await self._db(self.log.robot_refused, robot_digest(delivery.channel, robot), window.refused_until)
            error = str(err) if isinstance(err, DeliveryError) else (
                f"发送时出现程序错误，已停止重试；请把这条错误报告给维护人员，修复后用 "
                f"`budgetwatch outbox --retry-failed` 重发（unexpected error: {type(err).__name__}: {err}）"
            )
            # The backoff runs from when it failed: a hanging receiver's 30 s of tries must
            # not use up the first wait before it starts.
            failed_at = max(ts, self.clock().timestamp())
            wait = err.retry_after if isinstance(err, DeliveryError) else None
            status = await self._db(self.log.attempt_failed, delivery, failed_at, error, self.policy,
                                    final=set_aside, at_least=wait)
            stats.failed_attempts += 1
            if status == FAILED:
                stats.gave_up += 1
            stats.errors.append(f"{delivery.dedup_key}: {error}")
            log.warning(
                "投递失败 %s（第%d次）：%s", delivery.dedup_key, delivery.attempts + 1, error
            )
            return set_aside  # set aside as failed: the queue behind it goes on
        await self._db(self.log.delivered, delivery.id, sent_at)
        stats.delivered += 1
        return True

    # -- Alertmanager ----------------------------------------------------
    async def _am_due(self, ts: float) -> bool:
        if self._am_next is None or ts >= self._am_next:
            return True
        current = await self._db(self.log.firing_severities)
        return current != self._am_sent

    async def _push(self, now: dt.datetime, stats: DispatchStats) -> None:
        firing = await self._db(self.log.alerts)
        sent = await self._db(self.log.sent_firing)
        ended_ids = [a for a in sent if a not in firing]
        ended_rows = await self._db(self.log.alerts, ended_ids) if ended_ids else {}
        body: list[dict[str, Any]] = []
        for alert_id, alert in firing.items():
            previous = sent.get(alert_id)
            if previous is not None and previous[1] != alert_labels(alert):
                # The severity changed: end the series with the old labels.
                body.append(ended_series(previous[2], alert, now=now, labels=previous[1],
                                         generator_url=self._link(alert_id)))
            body.append(self._firing(alert, now))
        for alert_id in ended_ids:
            _, labels, last = sent[alert_id]
            alert = ended_rows.get(alert_id) or last
            body.append(resolved_alert(alert, now=now, labels=labels, generator_url=self._link(alert_id)))
        if not await self._post_am(body, now, stats):
            self._am_sent = None
            return
        await self._db(self.log.record_pushed, list(firing.values()), ended_ids, now.timestamp())
        self._am_sent = {a: str(alert["severity"]) for a, alert in firing.items()}

    async def _keep_alive(self, now: dt.datetime, stats: DispatchStats) -> None:
        """While new transitions are held, re-send what Alertmanager was last told, as it
        was: an alert it already has would otherwise expire at its ``endsAt`` (four
        intervals) and come back as a new notification when the hold ends — a false
        resolution and a second warning for every department."""
        sent = await self._db(self.log.sent_firing)
        await self._post_am([self._firing(alert, now) for _, _, alert in sent.values()], now, stats)

    def _firing(self, alert: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
        return firing_alert(alert, now=now, interval=self.alertmanager_interval,
                            generator_url=self._link(str(alert["alert_id"])))

    def _link(self, alert_id: str) -> str | None:
        return alert_link(self.board_url, alert_id)

    async def _post_am(self, body: list[dict[str, Any]], now: dt.datetime, stats: DispatchStats) -> bool:
        """POST to Alertmanager and schedule the next push: an interval on, or sooner
        (at most 15 s) after a failure."""
        assert self.alertmanager_url is not None
        ts = now.timestamp()
        try:
            if body:
                await post_alerts(self.client, self.alertmanager_url, body)
        except AlertmanagerError as err:
            stats.alertmanager_error = str(err)
            log.warning("推送 Alertmanager 失败：%s", err)
            self._am_next = ts + min(self.alertmanager_interval, 15.0)
            return False
        stats.alertmanager_pushed = len(body)
        self._am_next = ts + self.alertmanager_interval
        return True

    # -- the loop --------------------------------------------------------
    async def run_forever(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_interval`` s (or when ``wake`` is set) until ``stop`` is set.

        A bad round is logged and retried next round; it never ends the loop.
        """
        try:
            while not stop.is_set():
                try:
                    await self.run_once(wait=False)
                except Exception:
                    log.exception("通知投递轮次出错，将在下一轮重试")
                await self._pause(stop)
        finally:
            # A batch cut short is sent again by the next start (at least once, same keys).
            for task in list(self._sending.values()):
                task.cancel()
            await self.settle()
            self._dispatch_lock.release()
            await self.aclose()

    async def _pause(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait())]
        if self.wake is not None:
            waiters.append(asyncio.ensure_future(self.wake.wait()))
        try:
            await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
            if self.wake is not None:
                self.wake.clear()


def service_workers(service: Any, *, departments: str | None = None) -> list[Dispatcher]:
    """The hook `budgetwatch serve` calls (streams.service.outbox_workers).

    Returns the dispatcher when a directory or an Alertmanager URL is configured
    (``departments`` — `serve --departments` — or env BUDGETWATCH_DEPARTMENTS /
    BUDGETWATCH_ALERTMANAGER_URL), woken after every commit that stored transitions;
    registers the delivery metrics on the service's registry either way.
    """
    settings = Settings()
    if departments:
        settings = settings.model_copy(update={"departments": departments})
    try:
        dispatcher = Dispatcher.from_settings(service.store, settings)
    except DirectoryError as err:
        raise NotifyConfigError(str(err)) from None
    register_delivery_metrics(service.registry, service.store.path, routed=dispatcher.directory is not None)
    if not dispatcher.enabled:
        dispatcher.log.close()
        return []
    subscribe = getattr(service, "subscribe", None)
    if subscribe is not None:
        dispatcher.wake = subscribe()
    return [dispatcher]


# -- metrics ---------------------------------------------------------------


class DeliveryCollector(Collector):
    """Delivery status counts from the store, read at scrape time."""

    def __init__(self, db_path: str | Path, clock: Callable[[], float] = time.time, *, routed: bool = True) -> None:
        self.path = str(db_path)
        self.clock = clock
        # With no department directory nothing is routed: the outbox keeps every
        # transition for a directory set later, and a backlog exported then would only
        # grow — an alert on it would fire for good. Unknown is left out, not exported.
        self.routed = routed
        DeliveryLog(self.path).close()  # make sure the tables exist

    def collect(self) -> Iterator[Metric]:
        db = sqlite3.connect(self.path, timeout=5)
        try:
            counts = db.execute(
                "SELECT channel, status, COUNT(*) FROM deliveries GROUP BY channel, status"
            ).fetchall()
            oldest = db.execute(
                "SELECT MIN(created_at) FROM deliveries WHERE status = ?", (PENDING,)
            ).fetchone()[0]
            backlog = db.execute(
                "SELECT COUNT(*) FROM outbox o LEFT JOIN delivery_fanout f ON f.outbox_id = o.id"
                " WHERE f.outbox_id IS NULL"
            ).fetchone()[0]
        finally:
            db.close()
        table = {(c, s): int(n) for c, s, n in counts}
        deliveries = GaugeMetricFamily(
            "budget_notification_deliveries",
            "Notification deliveries by channel and current status (pending, delivered, failed)",
            labels=["channel", "status"],
        )
        delivered = CounterMetricFamily(
            "budget_notifications_delivered",
            "Notifications delivered, by channel",
            labels=["channel"],
        )
        for channel in (*CHANNELS, NO_CHANNEL):
            for status in STATUSES:
                deliveries.add_metric([channel, status], table.get((channel, status), 0))
            delivered.add_metric([channel], table.get((channel, DELIVERED), 0))
        yield deliveries
        yield delivered
        age = GaugeMetricFamily(
            "budget_notification_oldest_pending_age_seconds",
            "Age of the oldest pending delivery (0 when none)",
        )
        age.add_metric([], max(self.clock() - oldest, 0.0) if oldest is not None else 0.0)
        yield age
        if self.routed:
            unrouted = GaugeMetricFamily(
                "budget_notification_outbox_backlog",
                "Alert transitions in the outbox not yet routed to channels",
            )
            unrouted.add_metric([], int(backlog))
            yield unrouted


def register_delivery_metrics(
    registry: CollectorRegistry, db_path: str | Path, *, clock: Callable[[], float] = time.time,
    routed: bool = True,
) -> DeliveryCollector:
    """Register the delivery metrics on ``registry`` (not the global one); ``routed``:
    whether a department directory routes the outbox (else no backlog is exported)."""
    collector = DeliveryCollector(db_path, clock, routed=routed)
    registry.register(collector)
    return collector
