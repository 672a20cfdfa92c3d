"""The warning board (预警看板) and the disposition API, served by `budgetwatch serve`.

Server-rendered HTML (jinja2, templates in ``streams/web/templates``) plus one small
script (``web/static/board.js``) and the vendored uPlot chart library. Pages:

- ``/``: region (or, for a department user, its department) execution vs time
  progress, departments ranked with rates and alert counts, the alert list with
  filters that refreshes itself from ``/board/alerts.json`` (polling, no reload);
- ``/alerts/{id}``: one alert, its history, the disposition form (its department or
  the bureau) and, for the bureau, the approval of a reduce/recover;
- ``/projects/{id}``: payments over time against the expected progress curve,
  indicators and alert history;
- ``/reductions`` and ``/reductions.xlsx``: reduction proposals;
- ``GET/POST /api/alerts/{id}/dispositions`` (+ ``POST /api/alerts/{id}/approvals``).

Access (``streams.auth``): with a users file (``BUDGETWATCH_USERS``) every page needs
a login session (HttpOnly, SameSite=Strict cookie; Secure behind https) and every form
POST a CSRF token; the API takes ``Authorization: Bearer <token>``. A department user
sees only its department — pages of other departments answer 404 — and the core API
(/api/status, /api/alerts, /api/reductions) is filtered the same way; /api/rejected,
/metrics and POST /events are the bureau's. Without a users file the API stays open as
before and the board cannot be used (there is nobody to log in).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import math
import os
import re
import tempfile
import uuid
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import orjson
from aiohttp import web

from alerts.dispositions import (
    ACTION_NAMES,
    ACTIONS,
    AWAITING,
    DISPOSITION_KINDS,
    STATUS_NAMES,
    disposition_view,
)
from alerts.messages import (
    FUND_SOURCE_NAMES,
    RULE_NAMES,
    SEVERITY_NAMES,
    amount_text,
    number_text,
    pct_down,
    wan,
    yuan_text,
)
from alerts.rules import RULES
from budget.calendar import expected_curve, iso, time_progress_for_year, year_bounds, year_of
from budget.events import EventRejected, parse_event_object
from budget.indicators import completion
from budget.report import project_view
from connectors.exports import write_reductions_xlsx
from connectors.wall_clock import today_in_china
from streams.auth import LoginThrottle, Sessions, User, Users, load_users, same_token
from streams.errors import ClockError
from streams.json_output import json_text
from streams.links import path_segment
from streams.render import kind_label, most_urgent_first, status_label
from streams.service import SERVICE, Service, json_response

log = logging.getLogger("budgetwatch.board")

WEB = Path(__file__).resolve().parent / "web"
SESSION_COOKIE = "bw_session"
LOGIN_CSRF_COOKIE = "bw_login_csrf"
# Core endpoints guarded when users are configured; the filtered ones answer a
# department user with its own department's rows only.
FILTERED = ("/api/status", "/api/alerts", "/api/reductions")
# The list holds the most urgent this many (a province fires ~10k at a checkpoint, and the
# page refreshes every 3 s); the count says how many match, the filters narrow it.
LIST_LIMIT = 500
BUREAU_ONLY = ("/api/rejected", "/metrics", "/events")
PAGE_HEADERS = ("Link", "X-Next-After")  # kept through the department filter
PUBLIC_PATHS = frozenset({"/healthz", "/login"})  # and /static/…
MAX_WAITING_TOKEN_CHECKS = 16
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Board:
    def __init__(self, service: Service, users: Users | None) -> None:
        self.service = service
        self.users = users
        self.sessions = Sessions()
        self.throttle = LoginThrottle()
        self._tokens: dict[str, str] = {}  # sha256(token) -> login, after one scrypt check
        # sha256 of tokens that matched nobody (bounded): a client repeating a bad token
        # costs one check, not one scrypt per user per request.
        self._refused: OrderedDict[str, None] = OrderedDict()
        # scrypt runs off the event loop, one check at a time: made-up tokens sent in a
        # flood wait their turn instead of freezing every other request.
        self._token_checks: asyncio.Semaphore | None = None
        self._waiting_checks = 0
        # Every year's active alerts of every department, as of a store position: each
        # open tab polls them every 3 s, and they change only with a commit.
        self._active: tuple[tuple[int | None, int, int], list[dict[str, Any]]] | None = None
        self._password_checks: asyncio.Semaphore | None = None
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(WEB / "templates")),
            autoescape=jinja2.select_autoescape(("html",)),
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(pct=pct_down, wan=wan, num=number_text, amount=amount_text, yuan=yuan_text,
                                segment=path_segment)
        self.env.globals.update(
            RULE_NAMES=RULE_NAMES, SEVERITY_NAMES=SEVERITY_NAMES, STATUS_NAMES=STATUS_NAMES,
            ACTION_NAMES=ACTION_NAMES, kind_label=kind_label, FUND_SOURCE_NAMES=FUND_SOURCE_NAMES,
            ACTIONS=ACTIONS,
        )

    # -- who is asking -------------------------------------------------------------
    def user_of(self, request: web.Request) -> User | None:
        if self.users is None:
            return None
        token = bearer_token(request)
        if token is not None:
            return self._by_token(token)
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        return self.users.by_login(session.login) if session is not None else None

    def _by_token(self, token: str) -> User | None:
        assert self.users is not None
        if not token:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        login = self._tokens.get(key)
        if login is not None:
            return self.users.by_login(login)
        # resolve_token checked it before the handler, unless the path is public (nothing
        # there needs a caller): never a scrypt here, on the event loop.
        return None

    def _remember(self, key: str, user: User | None) -> User | None:
        if user is not None:
            self._tokens[key] = user.login
        else:
            self._refused[key] = None
            while len(self._refused) > REFUSED_TOKENS_KEPT:
                self._refused.popitem(last=False)
        return user

    async def resolve_token(self, request: web.Request) -> None:
        """Check a request's API token (scrypt) in a worker thread, before any handler
        asks :meth:`user_of`, which then only reads the result."""
        token = bearer_token(request)
        if self.users is None or token is None:
            return
        if request.path in PUBLIC_PATHS or request.path.startswith("/static/"):
            return  # nothing there asks who is calling: a flood of made-up tokens costs nothing
        key = hashlib.sha256(token.encode()).hexdigest()
        if not token or key in self._tokens or key in self._refused:
            return
        if self._token_checks is None:
            self._token_checks = asyncio.Semaphore(1)
        if self._waiting_checks >= MAX_WAITING_TOKEN_CHECKS:
            # Each unknown token costs one scrypt per token holder, one at a time: past a
            # short queue a new one is turned away at once rather than wait behind a flood.
            raise web.HTTPTooManyRequests(
                text=json_text({"error": "待校验的新令牌过多，请稍后重试（too many unverified tokens）"}),
                content_type="application/json", headers={"Retry-After": "5"},
            )
        self._waiting_checks += 1
        try:
            await self._check_token(token, key)
        finally:
            self._waiting_checks -= 1

    async def _check_token(self, token: str, key: str) -> None:
        assert self._token_checks is not None and self.users is not None
        async with self._token_checks:
            if key in self._tokens or key in self._refused:  # checked while this one waited
                return
            users = self.users
            self._remember(key, await asyncio.get_running_loop().run_in_executor(None, users.by_token, token))

    async def authenticate(self, login: str, password: str) -> User | None:
        """A password check (scrypt) in a worker thread, one at a time."""
        assert self.users is not None
        if self._password_checks is None:
            self._password_checks = asyncio.Semaphore(1)
        users = self.users
        async with self._password_checks:
            return await asyncio.get_running_loop().run_in_executor(None, users.authenticate, login, password)

    def csrf_of(self, request: web.Request) -> str | None:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        return session.csrf if session is not None else None

    # -- rendering -------------------------------------------------------------------
    def page(self, request: web.Request, template: str, code: int = 200, **context: Any) -> web.Response:
        user = self.user_of(request)
        text = self.env.get_template(template).render(
            user=user, csrf=self.csrf_of(request) or "", clock=self.clock_text(), **context
        )
        return web.Response(text=text, status=code, content_type="text/html", charset="utf-8",
                            headers=SECURITY_HEADERS)

    def closing(self, firing: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Last year's alerts still firing before its close (年度结束): how many, and when
        they end (and its proposals with them, as of its Dec 31)."""
        engine = self.service.engine
        clock = engine.monitor.clock
        if clock is None:
            return None
        last = year_of(clock) - 1
        close = engine.profile.year_close_day(last)
        count = sum(1 for r in firing if r["fiscal_year"] <= last)
        if close is None or engine.is_closed(last) or not count:
            return None
        return {"year": last, "on": iso(close), "count": count}

    def clock_text(self) -> str:
        clock = self.service.engine.monitor.clock
        return iso(clock) if clock is not None else "—"

    async def business_date(self) -> str:
        """The date of a disposition recorded now: the business clock in event time — the
        store's, reloaded if a CLI `run` moved it: dated by this process's older clock,
        an answer came before the alert it answers on replay, and was refused."""
        if self.service.live:
            return self.service.clock().isoformat()
        monitor = await self.service.db(self.service.engine.load)
        clock = monitor.clock
        return iso(clock) if clock is not None else today_in_china().isoformat()

    # -- reading (on the DB thread) ------------------------------------------------------
    def alerts(self, user: User | None, query: Any) -> list[dict[str, Any]]:
        """The alerts a board query may list, filtered in SQL as far as it goes (department,
        year, status): a province's store holds hundreds of thousands of resolved alerts,
        and the board reads its list every few seconds. :func:`filter_alerts` does the rest."""
        store = self.service.store
        department = self.scope(user) or query.get("department") or None
        year = year_of_query(query)
        status = query.get("status") or "firing"
        if status == "firing":
            rows = self._active_alerts(department, year)
        else:
            rows = store.alert_rows(status=None if status == "all" else status, department=department,
                                    fiscal_year=year)
        return [r for r in rows if user is None or user.sees(r["department_id"])]

    def active(self, user: User | None) -> list[dict[str, Any]]:
        """Every year's alerts firing or awaiting the bureau that ``user`` may see."""
        rows = self._active_alerts(self.scope(user), None)
        return [r for r in rows if user is None or user.sees(r["department_id"])]

    def _active_alerts(self, department: str | None, year: int | None) -> list[dict[str, Any]]:
        """Store.active_alerts; the unfiltered list (the bureau's) is kept until the next
        commit: reading it scans every alert's JSON (0.8 s at 200k alerts), and every
        open board polls it. A department's or a year's list is an index range."""
        store = self.service.store
        if department is not None or year is not None:
            return store.active_alerts(department=department, fiscal_year=year)
        position = store.position()
        if self._active is None or self._active[0] != position:
            self._active = (position, store.active_alerts())
        return self._active[1]

    @staticmethod
    def scope(user: User | None) -> str | None:
        """The one department a department user sees (None: every department)."""
        return user.department_id if user is not None and not user.is_bureau else None

    def department_choices(self, user: User | None, active: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """(id, how it is shown) for the filter, over every department with an alert:
        教育局（D01）, not D01 alone — its latest name, as the ledger has it (else as its
        newest firing alert has it)."""
        names: dict[str, tuple[int, str]] = {}
        for (year, dept), totals in self.service.engine.monitor.ledger.departments.items():
            if totals.department_name and year >= names.get(dept, (0, ""))[0]:
                names[dept] = (year, totals.department_name)
        newest = dict(_department_choices(active))
        shown = []
        for dept in self.service.store.alert_departments(self.scope(user)):
            name = names.get(dept, (0, ""))[1]
            shown.append((dept, f"{name}（{dept}）" if name else newest.get(dept, dept)))
        return shown

    def status(self, user: User | None, year: int | None = None) -> dict[str, Any] | None:
        try:
            data = self.service.engine.status(year)
        except ClockError:
            return None
        return scope_status(data, user)

    def alert(self, alert_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        row = self.service.store.db.execute("SELECT data FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        if row is None:
            return None, []
        return orjson.loads(row[0]), self.service.store.transition_rows(alert_id)

    def refusal(self, event_id: str) -> str | None:
        row = self.service.store.db.execute(
            "SELECT reason FROM rejected WHERE source LIKE ? ORDER BY id DESC LIMIT 1", (f"% (event_id {event_id})",)
        ).fetchone()
        return None if row is None else str(row[0])

    def project(self, project_id: str) -> dict[str, Any] | None:
        monitor = self.service.engine.load()
        state = monitor.ledger.projects.get(project_id)
        if state is None or state.fiscal_year is None or monitor.clock is None:
            return None
        clock = monitor.clock
        view = project_view(state, clock)
        first, last = year_bounds(state.fiscal_year)
        rows = self.service.store.db.execute(
            "SELECT day, type, amount, event_id FROM events WHERE project_id = ? AND type IN"
            " ('payment','payment_reversed','budget_approved','budget_adjusted') ORDER BY day, seq",
            (project_id,),
        ).fetchall()
        budget_by_day: dict[int, int] = {}
        paid_by_day: dict[int, int] = {}
        payments = []
        for day, kind, amount, event_id in rows:
            if kind == "payment":
                paid_by_day[day] = paid_by_day.get(day, 0) + amount
                payments.append({"date": iso(day), "amount": _yuan(amount), "event_id": event_id})
            elif kind == "payment_reversed":
                paid_by_day[day] = paid_by_day.get(day, 0) - amount
                payments.append({"date": iso(day), "amount": _yuan(-amount), "event_id": event_id})
            elif kind == "budget_adjusted":
                budget_by_day[day] = budget_by_day.get(day, 0) + amount
        approved = state.approved or 0
        curve = expected_curve(state.fiscal_year, state.plan)
        xs: list[int] = []
        actual: list[float | None] = []
        expected: list[float] = []
        paid = sum(v for d, v in paid_by_day.items() if d < first)
        budget = approved + sum(v for d, v in budget_by_day.items() if d < first)
        for index, day in enumerate(range(first, last + 1)):
            paid += paid_by_day.get(day, 0)
            budget += budget_by_day.get(day, 0)
            xs.append(int(dt.datetime.combine(dt.date.fromordinal(day), dt.time()).timestamp()))
            expected.append(round(curve[index], 4))
            actual.append(round(paid / budget, 4) if day <= clock and budget > 0 else None)
        indicators = []
        for ind in sorted(state.indicators.values(), key=lambda i: i.indicator_id):
            done = None
            if ind.target is not None and ind.actual is not None:
                done = completion(ind.direction, ind.target, ind.actual)
            indicators.append({"id": ind.indicator_id, "name": ind.name or ind.indicator_id, "target": ind.target,
                               "unit": ind.unit or "", "actual": ind.actual, "completion": done,
                               "reported_on": iso(ind.reported_on) if ind.reported_on else None})
        history = self.service.store.subject_transitions("project", project_id)
        return {
            "project": view, "payments": payments, "indicators": indicators, "history": history,
            "chart": {"x": xs, "actual": actual, "expected": expected},
            "time_progress": time_progress_for_year(clock, state.fiscal_year),
        }

    def reductions(self, user: User | None, fiscal_year: int | None = None) -> list[dict[str, Any]]:
        found = [p.to_json() for p in self.service.engine.reductions(fiscal_year)]
        return [p for p in found if user is None or user.sees(p["department_id"])]

    # -- writing -----------------------------------------------------------------------
    async def record(self, event: dict[str, Any]) -> str | None:
        """Append one event to the log and wait until it is processed; the refusal reason
        if the event was rejected (at the boundary or in processing), else None."""
        try:
            parse_event_object(event)
        except EventRejected as err:
            return err.reason
        counts, ticket = await self.service.ingest_body(orjson.dumps(event), f"board-{uuid.uuid4().hex[:12]}")
        if counts.rejected:
            return str(counts.reasons[0]["reason"]) if counts.reasons else "事件被拒收"
        await self.service.wait(ticket)
        if self.service.last_error:
            return self.service.last_error
        return await self.service.db(self.refusal, str(event["event_id"]))


def _yuan(fen: int) -> str:
    from budget.money import fen_to_str

    return fen_to_str(fen)


def scope_status(data: dict[str, Any], user: User | None) -> dict[str, Any]:
    """The status a user may see: a department user gets its department only, and its
    department's figures in place of the region's."""
    if user is None or user.is_bureau:
        return data
    mine = [d for d in data["departments"] if d["department_id"] == user.department_id]
    region = dict(data["region"])
    if mine:
        region.update(budget=mine[0]["budget"], paid=mine[0]["paid"], execution_rate=mine[0]["execution_rate"])
    else:
        region.update(budget="0.00", paid="0.00", execution_rate=None)
    return {
        **data,
        "scope": f"department:{user.department_id}",
        "region": region,
        "departments": mine,
        "projects": [p for p in data["projects"] if p["department_id"] == user.department_id],
        "unregistered_projects": [],
    }


def alert_view(row: dict[str, Any]) -> dict[str, Any]:
    view = disposition_view(row)
    figures = row.get("figures") or {}
    return {
        "alert_id": row["alert_id"], "fiscal_year": row["fiscal_year"],
        "rule": row["rule"], "rule_name": RULE_NAMES.get(row["rule"], row["rule"]),
        "severity": row["severity"], "severity_name": SEVERITY_NAMES.get(row["severity"], row["severity"]),
        "status": row["status"], "status_name": status_label(row),
        "subject_type": row["subject_type"], "subject_id": row["subject_id"],
        "subject_name": row.get("subject_name") or row["subject_id"],
        "department_id": row["department_id"], "department_name": row.get("department_name") or "",
        "since": row["since"], "updated_on": row["updated_on"],
        # the date of its figures: its last evaluation, or the Dec 31 its year's close reports
        "evaluated_on": figures.get("as_of") or row["updated_on"],
        "execution_rate": pct_down(figures.get("execution_rate")),
        "message": row.get("message", ""),
        "disposition": view,
    }


def _disposition_status(row: dict[str, Any]) -> str | None:
    return (row.get("disposition") or {}).get("status")


def year_of_query(query: Any) -> int | None:
    """``year`` of a board query as a fiscal year; anything else (blank, a typo) is none."""
    text = str(query.get("year") or "")
    return int(text) if re.fullmatch(r"(19|20|21)[0-9]{2}", text) else None


def filter_alerts(rows: list[dict[str, Any]], query: Any) -> list[dict[str, Any]]:
    rule, severity = query.get("rule") or "", query.get("severity") or ""
    department, status = query.get("department") or "", query.get("status") or "firing"
    overdue = query.get("overdue") or ""
    year = year_of_query(query)
    out = []
    for r in rows:
        if rule and r["rule"] != rule:
            continue
        if year is not None and r["fiscal_year"] != year:
            continue
        if severity and r["severity"] != severity:
            continue
        if department and r["department_id"] != department:
            continue
        state = _disposition_status(r)
        # A reduction awaiting the bureau is work to do even after its alert resolved:
        # listed with the firing ones, as the board's "待财政审批" count has it.
        if status != "all" and r["status"] != status and not (status == "firing" and state == AWAITING):
            continue
        # Overdue is a firing alert's state; a resolved one keeps the word from its past.
        is_overdue = state == "overdue" and r["status"] == "firing"
        if overdue == "1" and not is_overdue:
            continue
        if overdue == "0" and is_overdue:
            continue
        out.append(r)
    return most_urgent_first(out)


# -- middleware: the core API under access control -------------------------------------------
@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    board: Board = request.app[BOARD]
    await board.resolve_token(request)
    path = request.path
    if board.users is None or (path not in FILTERED and path not in BUREAU_ONLY):
        return await handler(request)
    user = board.user_of(request)
    if user is None:
        return _json_error(_unauthorized_text(request), 401, headers=CHALLENGE)
    if not _came_from_our_page(board, request):
        return _json_error("CSRF 校验失败（X-CSRF-Token）", 403)
    if user.is_bureau:
        return await handler(request)
    if path in BUREAU_ONLY:
        return _json_error("仅财政局用户可以访问", 403)
    if path == "/api/alerts":  # read in SQL for its department: pages of its own rows
        asked = request.query.get("department")
        if asked and asked != user.department_id:
            return json_response([])
        request = request.clone(rel_url=request.rel_url.update_query(department=user.department_id or ""))
    response = await handler(request)
    if not isinstance(response, web.Response) or response.status != 200 or response.text is None:
        return response
    data = orjson.loads(response.text)
    if path == "/api/status":
        data = scope_status(data, user)
    else:
        data = [r for r in data if r.get("department_id") == user.department_id]
    return json_response(data, headers={k: v for k, v in response.headers.items() if k in PAGE_HEADERS})


# RFC 9110: a 401 names the scheme to authenticate with.
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="budgetwatch"'}


def _json_error(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"error": message}, status=status, headers=headers)


# -- handlers ----------------------------------------------------------------------------------
def _board(request: web.Request) -> Board:
    return request.app[BOARD]


def _login_required(request: web.Request) -> User:
    user = _board(request).user_of(request)
    if user is None:
        raise web.HTTPSeeOther("/login")
    return user


async def _form_with_csrf(request: web.Request) -> tuple[User, Any]:
    board = _board(request)
    user = _login_required(request)
    form = await _read_form(request)
    if not same_token(str(form.get("csrf", "")), board.csrf_of(request)):
        raise web.HTTPForbidden(text="CSRF 校验失败：请刷新页面后重新提交", content_type="text/plain")
    return user, form


async def _read_form(request: web.Request) -> Any:
    """The form of a POST; a body that is not one (bad bytes, an unknown charset, a
    broken multipart) is a Chinese 400, not a 500 with a traceback."""
    try:
        return await request.post()
    except (ValueError, LookupError) as err:  # UnicodeDecodeError is a ValueError
        raise web.HTTPBadRequest(
            text=f"表单无法读取（{type(err).__name__}）：请刷新页面后重新提交", content_type="text/plain"
        ) from None


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


async def login_page(request: web.Request) -> web.Response:
    board = _board(request)
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or uuid.uuid4().hex + uuid.uuid4().hex
    response = board.page(request, "login.html", login_csrf=token, error=None, configured=board.users is not None)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=_secure(request),
                        path="/login")
    return response


async def login_post(request: web.Request) -> web.Response:
    board = _board(request)
    form = await _read_form(request)
    token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not same_token(str(form.get("csrf", "")), token):
        raise web.HTTPForbidden(text="CSRF 校验失败：请刷新登录页后重试", content_type="text/plain")
    user = None
    login = str(form.get("login", ""))
    keys = (f"login:{login}", f"address:{request.remote or ''}")
    if wait := board.throttle.wait(*keys):
        log.warning("登录被暂缓：%s 来自 %s，失败次数过多（login throttled）", login, request.remote)
        return board.page(request, "login.html", code=429, login_csrf=token,
                          error=f"登录失败次数过多，请 {math.ceil(wait)} 秒后再试", configured=board.users is not None)
    if board.users is not None:
        user = await board.authenticate(login, str(form.get("password", "")))
    if user is None:
        board.throttle.failed(*keys)
        log.warning("登录失败：%s 来自 %s（failed login）", login, request.remote)
        return board.page(request, "login.html", code=401, login_csrf=token, error="用户名或密码错误",
                          configured=board.users is not None)
    board.throttle.succeeded(keys[0])
    session_id, _ = board.sessions.create(user.login, replacing=request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/")
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="Strict", secure=_secure(request),
                        path="/", max_age=int(board.sessions.seconds))
    raise response


async def logout_post(request: web.Request) -> web.Response:
    await _form_with_csrf(request)
    _board(request).sessions.drop(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def _department_choices(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(id, how it is shown) for the filter: 教育局（D01）, not D01 alone — the newest name
    an alert carries (a renamed department's latest)."""
    names: dict[str, tuple[str, str]] = {}
    for r in rows:
        dept, since = r["department_id"], str(r.get("updated_on") or "")
        if r.get("department_name") and since >= names.get(dept, ("", ""))[0]:
            names[dept] = (since, r["department_name"])
        names.setdefault(dept, ("", ""))
    return [(d, f"{names[d][1]}（{d}）" if names[d][1] else d) for d in sorted(names)]


async def board_page(request: web.Request) -> web.Response:
    board = _board(request)
    user = _login_required(request)
    chosen = year_of_query(request.query)
    def read() -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str]],
                        list[int]]:
        active = board.active(user)
        return (board.status(user, chosen), active, board.alerts(user, request.query),
                board.department_choices(user, active), board.service.store.alert_years(board.scope(user)))

    status, active, rows, choices, alert_years = await board.service.db(read)
    firing = [r for r in active if r["status"] == "firing"]
    overdue = [r for r in firing if _disposition_status(r) == "overdue"]
    departments = []
    if status is not None:
        # The ranking shows one year's figures (the clock's): its alert counts are that
        # year's too — in January last year's alerts still fire beside this year's zeros.
        year = status["fiscal_year"]
        counts = Counter(r["department_id"] for r in firing if r["fiscal_year"] == year)
        overdue_of_year = Counter(r["department_id"] for r in overdue if r["fiscal_year"] == year)
        for d in status["departments"]:
            departments.append({**d, "alerts": counts.get(d["department_id"], 0),
                                "overdue": overdue_of_year.get(d["department_id"], 0)})
        departments.sort(key=lambda d: (d["execution_rate"] is None, d["execution_rate"] or 0.0))
    matching = filter_alerts(rows, request.query)
    shown = [alert_view(r) for r in matching[:LIST_LIMIT]]
    return board.page(
        request, "board.html", status=status, departments=departments, alerts=shown, query=request.query,
        matching=len(matching),
        closing=board.closing(firing),
        rules=RULES, department_choices=choices,
        years=sorted(set(alert_years) | ({status["fiscal_year"]} if status else set()), reverse=True),
        totals={"firing": len(firing), "overdue": len(overdue),
                "awaiting": sum(1 for r in active if _disposition_status(r) == AWAITING)},
    )


async def board_alerts_json(request: web.Request) -> web.Response:
    board = _board(request)
    user = board.user_of(request)
    if user is None:
        return _json_error("需要登录", 401, headers=CHALLENGE)
    rows = await board.service.db(board.alerts, user, request.query)
    matching = filter_alerts(rows, request.query)
    shown = [alert_view(r) for r in matching[:LIST_LIMIT]]
    return web.json_response({"clock": board.clock_text(), "count": len(matching), "alerts": shown},
                             dumps=lambda d: orjson.dumps(d).decode(), headers={"Cache-Control": "no-store"})


async def _visible_alert(request: web.Request, user: User | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    board = _board(request)
    alert, history = await board.service.db(board.alert, request.match_info["alert_id"])
    if alert is None or (user is not None and not user.sees(alert["department_id"])):
        raise web.HTTPNotFound(text="未找到该预警", content_type="text/plain")
    return alert, history


async def alert_page(request: web.Request) -> web.Response:
    user = _login_required(request)
    alert, history = await _visible_alert(request, user)
    return _alert_response(request, user, alert, history, error=None, status=200)


def _alert_response(request: web.Request, user: User, alert: dict[str, Any], history: list[dict[str, Any]],
                    *, error: str | None, status: int, typed: Any = None) -> web.Response:
    """The alert page; ``typed``: the refused form, given back so nothing typed is lost."""
    view = alert_view(alert)
    kept = {k: str(typed.get(k) or "") for k in ("action", "amount", "note")} if typed is not None else {}
    return _board(request).page(
        request, "alert.html", code=status, alert=view, raw=alert, history=history, error=error,
        notice=request.query.get("ok"), awaiting=view["disposition"]["status"] == AWAITING, typed=kept,
    )


def _disposition_event(alert: dict[str, Any], user: User | None, data: Any, date: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "alert_disposed", "event_id": f"disp-{uuid.uuid4().hex}", "occurred_on": date,
        "alert_id": alert["alert_id"], "action": str(data.get("action") or ""),
        "note": str(data.get("note") or "").strip() or None,
        "by": user.login if user is not None else (str(data.get("by") or "").strip() or None),
    }
    amount = str(data.get("amount") or "").strip()
    if amount:
        try:
            event["amount"] = str(Decimal(amount))
        except InvalidOperation:
            event["amount"] = amount  # refused by the event contract with its reason
    return event


def _approval_event(alert: dict[str, Any], user: User | None, data: Any, date: str) -> dict[str, Any]:
    approved = _decision(data.get("approved", True))
    return {
        "type": "disposition_approved", "event_id": f"appr-{uuid.uuid4().hex}", "occurred_on": date,
        "alert_id": alert["alert_id"], "disposition_event_id": str(data.get("disposition_event_id") or ""),
        "approved": approved, "note": str(data.get("note") or "").strip() or None,
        "by": user.login if user is not None else (str(data.get("by") or "").strip() or None),
    }


# What a bureau's decision may be written as: a JSON boolean, or a form's value.
_APPROVE = {"1", "true", "yes", "approve", "同意"}
_RETURN = {"0", "false", "no", "return", "退回", "不同意"}


class DecisionError(ValueError):
    """An approval whose decision is neither yes nor no: never read as a yes."""


def _decision(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _APPROVE:
        return True
    if text in _RETURN:
        return False
    raise DecisionError(
        f"approved 应为 true（同意）或 false（退回），收到 {orjson.dumps(value).decode()}"
    )


async def dispose_post(request: web.Request) -> web.Response:
    board = _board(request)
    user, form = await _form_with_csrf(request)
    alert, history = await _visible_alert(request, user)
    if not str(form.get("note") or "").strip():
        return _alert_response(request, user, alert, history, error="请填写处置说明", status=400, typed=form)
    error = await board.record(_disposition_event(alert, user, form, await board.business_date()))
    if error:
        alert, history = await _visible_alert(request, user)
        return _alert_response(request, user, alert, history, error=error, status=400, typed=form)
    raise web.HTTPSeeOther(f"/alerts/{path_segment(alert['alert_id'])}?ok=disposed")


async def approve_post(request: web.Request) -> web.Response:
    board = _board(request)
    user, form = await _form_with_csrf(request)
    alert, history = await _visible_alert(request, user)
    if not user.is_bureau:
        raise web.HTTPForbidden(text="仅财政局用户可以审批", content_type="text/plain")
    try:
        error = await board.record(_approval_event(alert, user, form, await board.business_date()))
    except DecisionError as err:
        error = str(err)
    if error:
        alert, history = await _visible_alert(request, user)
        return _alert_response(request, user, alert, history, error=error, status=400)
    raise web.HTTPSeeOther(f"/alerts/{path_segment(alert['alert_id'])}?ok=approved")


async def project_page(request: web.Request) -> web.Response:
    board = _board(request)
    user = _login_required(request)
    data = await board.service.db(board.project, request.match_info["project_id"])
    if data is None or not user.sees(data["project"]["department_id"]):
        raise web.HTTPNotFound(text="未找到该项目", content_type="text/plain")
    chart = orjson.dumps({**data["chart"], "time_progress": data["time_progress"]}).decode()
    return board.page(request, "project.html", chart_json=chart, **data)


async def reductions_page(request: web.Request) -> web.Response:
    """One fiscal year's proposals (?year=, default the clock's): in January last year's
    still follow its alerts; after its close (年度结束) they are its final list."""
    board = _board(request)
    user = _login_required(request)
    chosen = year_of_query(request.query)
    proposals = await board.service.db(board.reductions, user, chosen)
    return board.page(request, "reductions.html", proposals=proposals, year=board.service.engine.shown_year(chosen),
                      chosen=chosen)


async def reductions_xlsx(request: web.Request) -> web.Response:
    board = _board(request)
    user = _login_required(request)
    chosen = year_of_query(request.query)
    proposals = await board.service.db(board.reductions, user, chosen)
    year = board.service.engine.shown_year(chosen)

    def build() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "reductions.xlsx"
            write_reductions_xlsx(path, proposals, board.clock_text(), year)
            return path.read_bytes()

    body = await board.service.db(build)
    name = f"{year}年度调减建议{board.clock_text()}.xlsx" if year is not None else f"调减建议{board.clock_text()}.xlsx"
    return web.Response(body=body, headers={
        "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "Content-Disposition": f"attachment; filename=\"reductions.xlsx\"; filename*=UTF-8''{quote(name)}",
        "Cache-Control": "no-store",
    })


# -- the disposition API ------------------------------------------------------------------
def _api_user(request: web.Request) -> User | None:
    """The caller of the API (None when no users file: open, as the rest of the API)."""
    board = _board(request)
    if board.users is None:
        return None
    user = board.user_of(request)
    if user is None:
        raise web.HTTPUnauthorized(headers=CHALLENGE, text=json_text({"error": _unauthorized_text(request)}),
                                   content_type="application/json")
    if not _came_from_our_page(board, request):
        raise web.HTTPForbidden(text=json_text({"error": "CSRF 校验失败（X-CSRF-Token）"}),
                                content_type="application/json")
    return user


def bearer_token(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (the scheme in any case, RFC 7235)."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _unauthorized_text(request: web.Request) -> str:
    """Why a request is refused: no credentials at all, or a token no user holds."""
    if bearer_token(request):
        return "API 令牌无效或已停用：请核对令牌，或请管理员在用户文件中重新配置（invalid API token）"
    return "需要登录或 API 令牌（Authorization: Bearer …）（login or API token required）"


def _came_from_our_page(board: Board, request: web.Request) -> bool:
    """A POST on a browser session must carry the session's CSRF token (X-CSRF-Token);
    one with an API token needs none (no browser sends it by itself)."""
    if request.method != "POST" or bearer_token(request) is not None:
        return True
    return same_token(request.headers.get("X-CSRF-Token"), board.csrf_of(request))


async def _api_alert(request: web.Request, user: User | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    board = _board(request)
    alert, history = await board.service.db(board.alert, request.match_info["alert_id"])
    if alert is None or (user is not None and not user.sees(alert["department_id"])):
        raise web.HTTPNotFound(text=json_text({"error": "未找到该预警"}), content_type="application/json")
    return alert, history


def _dispositions_json(alert: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "alert_id": alert["alert_id"],
        "status": alert["status"],
        "department_id": alert["department_id"],
        "disposition": alert.get("disposition"),
        "history": [
            {"transition": t["transition"], "date": t["date"], "disposition": t.get("disposition"),
             "message": t.get("message")}
            for t in history if t["transition"] in DISPOSITION_KINDS
        ],
    }


async def api_dispositions_get(request: web.Request) -> web.Response:
    alert, history = await _api_alert(request, _api_user(request))
    return json_response(_dispositions_json(alert, history))


async def _api_body(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json_text({"error": "请求体应为 JSON 对象"}), content_type="application/json")
    return data


async def api_dispositions_post(request: web.Request) -> web.Response:
    board = _board(request)
    user = _api_user(request)
    alert, _ = await _api_alert(request, user)
    data = await _api_body(request)
    if not str(data.get("note") or "").strip():  # as the board's form: an answer says why
        return _json_error("请填写处置说明（note）：原因与整改措施", 400)
    # The business clock dates it, never the client: a date in the body could move
    # every user's clock forward (and fire deadlines) for good.
    event = _disposition_event(alert, user, data, await board.business_date())
    error = await board.record(event)
    alert, history = await _api_alert(request, user)
    if error:
        return json_response({"error": error, "event_id": event["event_id"]}, status=422)
    return json_response({"event_id": event["event_id"], **_dispositions_json(alert, history)}, status=201)


async def api_approvals_post(request: web.Request) -> web.Response:
    board = _board(request)
    user = _api_user(request)
    if user is not None and not user.is_bureau:
        return _json_error("仅财政局用户可以审批", 403)
    alert, _ = await _api_alert(request, user)
    data = await _api_body(request)
    try:
        event = _approval_event(alert, user, data, await board.business_date())
    except DecisionError as err:
        return _json_error(str(err), 400)
    error = await board.record(event)
    alert, history = await _api_alert(request, user)
    if error:
        return json_response({"error": error, "event_id": event["event_id"]}, status=422)
    return json_response({"event_id": event["event_id"], **_dispositions_json(alert, history)}, status=201)


BOARD: web.AppKey[Board] = web.AppKey("board", Board)
REFUSED_TOKENS_KEPT = 10_000


def install(app: web.Application, service: Service, users: Users | None) -> Board:
    board = Board(service, users)
    app[BOARD] = board
    app.middlewares.append(access_middleware)
    router = app.router
    router.add_get("/", board_page)
    router.add_get("/login", login_page)
    router.add_post("/login", login_post)
    router.add_post("/logout", logout_post)
    router.add_get("/board/alerts.json", board_alerts_json)
    router.add_get("/alerts/{alert_id}", alert_page)
    router.add_post("/alerts/{alert_id}/dispose", dispose_post)
    router.add_post("/alerts/{alert_id}/approve", approve_post)
    router.add_get("/projects/{project_id}", project_page)
    router.add_get("/reductions", reductions_page)
    router.add_get("/reductions.xlsx", reductions_xlsx)
    router.add_get("/api/alerts/{alert_id}/dispositions", api_dispositions_get)
    router.add_post("/api/alerts/{alert_id}/dispositions", api_dispositions_post)
    router.add_post("/api/alerts/{alert_id}/approvals", api_approvals_post)
    router.add_static("/static", str(WEB / "static"))
    return board


def register(app: web.Application, service: Service) -> None:
    """Route registrar for ``build_app``: users from ``BUDGETWATCH_USERS`` (unset: open API,
    no board logins)."""
    path = os.environ.get("BUDGETWATCH_USERS", "").strip()
    if not path:
        log.warning(
            "未配置用户文件（BUDGETWATCH_USERS）：看板无法登录，API 不需令牌，任何能访问本端口的人都可以"
            "提交事件、处置和审批预警；请只在本机使用，或配置用户文件（no users file: the API is open）"
        )
    install(app, service, load_users(path) if path else None)


__all__ = ["BOARD", "SERVICE", "Board", "install", "register"]
