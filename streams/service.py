"""`budgetwatch serve`: the long-running embedded service (aiohttp).

- ``POST /events``: one JSON event, a JSON array of events or JSON Lines; the
  answer counts read / accepted / applied / duplicate / rejected with the
  reasons (a rejected line's source is ``http:<request-id>:<line>``).
  ``?wait=1`` answers only once the events have been processed.
- Continuous processing: each ingest wakes the processor (an ``asyncio.Event``,
  no polling); a burst that lands while a run is busy is handled by the next
  run. In event time (default) a run goes up to the latest business date
  received; with ``live`` the clock is the wall clock (injected), checked
  every ``tick_seconds`` so time-driven rules fire on days without events.
- ``GET /metrics`` (Prometheus), ``/healthz``, ``/api/status``,
  ``/api/alerts`` (``?all=1`` for every transition, ``?department=``, ``?year=``),
  ``/api/reductions``, ``/api/rejected``: the same JSON as the CLI's ``--json``.

Threading: every use of SQLite, the engine and its monitor runs on one worker
thread (a single-thread executor), so a long run never blocks the event loop
and nothing is touched from two threads. Handlers and background workers go
through :meth:`Service.db`.

Extension hooks:
- ``build_app(service, routes=[...])``: each route registrar is called with
  ``(app, service)`` and may add routes (e.g. a web board).
- ``build_app(service, workers=[...])``: each worker is an object with
  ``async def run_forever(stop: asyncio.Event)``, started with the app and
  stopped (``stop`` set) on shutdown — the outbox dispatcher and the
  Alertmanager pusher plug in here. ``service.subscribe()`` gives a worker an
  event that is set after every commit that stored alert transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import importlib
import importlib.util
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

import orjson
from aiohttp import web, web_protocol
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from budget.calendar import iso, to_day
from budget.events import EARLIEST_YEAR, LATEST_YEAR
from connectors import metrics
from connectors.grafana import AnnotationError, GrafanaAnnotator
from connectors.json_body import parse_body
from connectors.wall_clock import today_in_china
from streams.engine import Engine, RunSummary, held_until, waiting_text
from streams.errors import BudgetwatchError, ClockError, StoreError
from streams.ingest import IngestCounts, ingest
from streams.json_output import JsonArray, json_text
from streams.store import Store

log = logging.getLogger("budgetwatch.service")

T = TypeVar("T")
Clock = Callable[[], dt.date]
MAX_BODY_BYTES = 256 * 1024 * 1024  # POST /events: a day's payments of a county in one body
# Every other request (login form, disposition JSON) is small; read before any check
# (a login form is parsed to know who asks), a large limit let anyone fill the memory.
MAX_OTHER_BODY_BYTES = 1024 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LIMIT_IN_TEXT = re.compile(r"size (\d+)")  # "Maximum request body size N exceeded."


class Worker(Protocol):
    """A background task started with the service (outbox dispatcher, pushers, …)."""

    async def run_forever(self, stop: asyncio.Event) -> None: ...


RouteRegistrar = Callable[[web.Application, "Service"], None]


JSON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# aiohttp's own answers for routing, in the user's language.
ROUTING_ERRORS = {
    404: "没有这个地址，请检查网址（not found）",
    405: "这个地址不接受这种请求方法（method not allowed）",
}


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json_text(data), status=status, content_type="application/json", charset="utf-8",
        # Figures of a department are not for a shared proxy's or browser's cache.
        headers={**JSON_HEADERS, **(headers or {})},
    )


def bad_request(message: str) -> web.HTTPBadRequest:
    """A 400 to raise from inside a handler's helpers, as error_response answers."""
    return web.HTTPBadRequest(text=json_text({"error": message}), content_type="application/json",
                              headers=JSON_HEADERS)


def error_response(message: str, *, status: int) -> web.Response:
    return json_response({"error": message}, status=status)


def too_large_response(limit: int) -> web.Response:
    return error_response(
        f"请求体超过上限 {limit:,} 字节（{limit / 2**20:g} MiB），未接收任何内容；请拆分为多次提交"
        f"（request body larger than {limit} bytes）",
        status=413,
    )


# How old the last /metrics may be to answer a scrape while the DB thread is busy.
SCRAPE_STAND_IN_SECONDS = 60.0
# A failed run is tried again after 30 s, then 60, 120 … up to every 10 minutes.
RETRY_FIRST_SECONDS = 30.0
RETRY_MAX_SECONDS = 600.0


class Service:
    """The engine behind the HTTP API: ingest, continuous processing, readings."""

    def __init__(
        self,
        engine: Engine,
        *,
        live: bool = False,
        clock: Clock = today_in_china,
        tick_seconds: float = 60.0,
        log_poll_seconds: float = 5.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.live = live
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.log_poll_seconds = log_poll_seconds
        self.registry = registry if registry is not None else CollectorRegistry()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budgetwatch-db")
        self._wake = asyncio.Event()
        self._last_tick = time.monotonic()
        self._seen_seq = 0  # the log's top seq at the last look (see _log_grew)
        self.stopping = asyncio.Event()
        self._run_lock = asyncio.Lock()
        self._progress = asyncio.Condition()
        self._subscribers: list[asyncio.Event] = []
        self._ingested = 0  # tickets: ingests that appended something
        self._processed = 0  # the last ticket a successful run covered
        self._attempted = 0  # the last ticket a run tried (waiters are answered, failed or not)
        self._pending_since: float | None = None  # monotonic time of the oldest unprocessed ingest
        self.last_error: str | None = None
        self.ingest_error: str | None = None  # the last ingest's storage error, until one or a run succeeds
        self._ingesting = 0  # ingests holding (or queued for) the DB thread
        self.last_scrape: tuple[float, bytes] | None = None  # (monotonic time, /metrics) as last generated
        self._retry_at: float | None = None  # monotonic time to try a failed run again
        self._retry_delay = 0.0
        self.last_run: RunSummary | None = None
        self.runs = 0
        self._calendar_warned: set[int] = set()  # years already reported missing from the calendar
        metrics.register(
            self.registry,
            self._loaded_monitor,
            counters=self.store.counters,
            progress=self._metrics_progress,
        )

    # -- the database thread -------------------------------------------------
    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the one thread that owns SQLite and the engine."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args))

    def prepare(self) -> None:
        """Restore the engine from the store (blocking; raises StoreError on a profile mismatch)."""
        self._executor.submit(self.engine.load).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def _fresh_monitor(self) -> Any:
        """The engine's monitor, reloaded if another process committed since (a CLI `run`,
        a second serve): on the DB thread. Without it /metrics and /healthz kept the
        state of this process's last run until some other request reloaded it."""
        try:
            return self.engine.load()
        except BudgetwatchError:
            return self.engine.monitor  # the run reports it; a scrape shows what it has

    def _loaded_monitor(self) -> Any:
        monitor = self._fresh_monitor()
        return monitor if monitor.clock is not None else None

    def _metrics_progress(self) -> metrics.Progress:
        since = self._pending_since
        waiting = time.monotonic() - since if since is not None else 0.0
        return metrics.Progress(latest_event_day=self.store.max_day(not_after=self._latest_runnable_day()),
                                waiting_seconds=waiting, failing=self.last_error is not None)

    def _latest_runnable_day(self) -> int | None:
        """The last business day a run may reach now: today, when the engine has a wall
        clock. An event dated later waits for its day and is not processing lag."""
        if self.live:
            return to_day(self.clock())
        return self.engine.last_reachable_day()

    def waiting(self, clock: int) -> tuple[int, str] | None:
        """Events a run at business clock ``clock`` left for later, and what users are
        told of them (on the database thread). They wait for the last day a run may
        reach — today, when runs follow the wall clock — not for the clock, which stops
        at the latest event processed (a payment dated 12-20 "waited for 09-29")."""
        until, held_by = held_until(self._latest_runnable_day(), clock)
        count = self.engine.waiting_after(until)
        return (count, waiting_text(count, until, held_by=held_by)) if count else None

    # -- ingest ----------------------------------------------------------------
    async def ingest_body(self, body: bytes, request_id: str) -> tuple[IngestCounts, int]:
        """Append the events of one request; returns the counts and a ticket for :meth:`wait`."""
        origin = f"http:{request_id}"

        def work() -> IngestCounts:
            return ingest(self.store, parse_body(body, origin), atomic=True)

        self._ingesting += 1
        try:
            counts = await self.db(work)
        except sqlite3.Error as err:
            # Every POST answers 503 while the disk is full: /healthz says so too (it
            # stayed "ok", and monitoring saw nothing), until an ingest succeeds again.
            self.ingest_error = f"接收事件失败：{err}"
            raise
        finally:
            self._ingesting -= 1
        self.ingest_error = None
        ticket = self._processed
        # After a failed run (a full disk, since freed), the client re-sends: every event is
        # a duplicate, but what is pending must be tried again — or nothing ever retried it.
        if counts.applied or self.last_error is not None:
            self._ingested += 1
            ticket = self._ingested
            if self._pending_since is None:
                self._pending_since = time.monotonic()
            self._wake.set()
        return counts, ticket

    async def wait(self, ticket: int) -> None:
        """Until a run has covered everything ingested up to ``ticket``."""
        async with self._progress:
            await self._progress.wait_for(
                lambda: self._attempted >= ticket or self.stopping.is_set()
            )

    # -- processing --------------------------------------------------------------
    def _run_sync(self) -> RunSummary:
        as_of: int | None = None
        if self.live:
            today = to_day(self.clock())
            clock, _ = self.store.cursor()
            as_of = today if clock is None else max(today, clock)
        summary = self.engine.run(as_of)
        self._warn_uncovered_year(summary)  # here: it reads the store, on the database thread
        return summary

    def _warn_uncovered_year(self, summary: RunSummary) -> None:
        if summary.as_of is None:
            return
        for year in self.engine.uncovered_calendar_years(summary.as_of):
            if year not in self._calendar_warned:
                self._calendar_warned.add(year)
                log.warning(
                    "the holiday calendar does not list %d: disposition deadlines count Monday to "
                    "Friday until the year's schedule is added (then run --rebuild)", year,
                )

    def _reset_engine(self) -> None:
        # A failed run may have applied events in memory that were never committed:
        # start again from the last commit.
        old = self.engine
        self.engine = Engine(
            self.store, old.profile, commit_every=old.commit_every, dispositions=old.dispositions,
            today=old.today,
        )
        self.engine.load()

    async def process_now(self) -> RunSummary | None:
        """One run over everything pending (also what the processor does when woken)."""
        async with self._run_lock:
            ticket = self._ingested
            summary: RunSummary | None = None
            try:
                summary = await self.db(self._run_sync)
            except Exception as err:
                self.last_error = f"处理事件失败：{err}"
                # Tried again by itself, less and less often (a lock held by a long CLI
                # rebuild, a disk being freed): it waited for the next POST, maybe for good.
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS) if self._retry_delay else (
                    RETRY_FIRST_SECONDS)
                self._retry_at = time.monotonic() + self._retry_delay
                log.exception("processing failed; retried from the last commit on the next wake-up or in %.0f s",
                              self._retry_delay)
                with contextlib.suppress(Exception):
                    await self.db(self._reset_engine)
            else:
                # a run that committed shows the storage works again: an ingest that failed
                # and was never re-sent must not keep /healthz at 503 for good
                self.last_error = self.ingest_error = None
                self._retry_at, self._retry_delay = None, 0.0
                self.last_run = summary
                self.runs += 1
                if summary.after_close:
                    log.warning("%d money events dated after their project's fiscal year closed were counted "
                                "in that closed year (projects %s): most likely the next year's, under last "
                                "year's code", summary.after_close, ", ".join(summary.after_close_projects))
            async with self._progress:
                self._attempted = max(self._attempted, ticket)
                if summary is not None:
                    # A failed run covered nothing: its events stay pending (`/healthz`), and
                    # the processing lag keeps growing until a run succeeds.
                    self._processed = max(self._processed, ticket)
                    if self._processed >= self._ingested:
                        self._pending_since = None
                self._progress.notify_all()
            if summary is not None and summary.transitions:
                for event in self._subscribers:
                    event.set()
            return summary

    async def run_processor(self) -> None:
        """Process whenever woken (ingest), when events appended by another process (a
        CLI `ingest` beside serve) are found in the log, and, in live mode, every
        ``tick_seconds``."""
        while not self.stopping.is_set():
            timeout = min(self.tick_seconds, self.log_poll_seconds) if self.live else self.log_poll_seconds
            woken = True
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                woken = False
            if self.stopping.is_set():
                return
            if not woken:
                due = self.live and time.monotonic() - self._last_tick >= self.tick_seconds
                retry = self._retry_at is not None and time.monotonic() >= self._retry_at
                if not due and not retry and not await self.db(self._log_grew):
                    continue
            self._wake.clear()
            self._last_tick = time.monotonic()
            await self.process_now()

    def running(self) -> bool:
        """Whether a run is in progress (it holds the DB thread)."""
        return self._run_lock.locked()

    def busy(self) -> bool:
        """Whether a run or an ingest holds the DB thread."""
        return self.running() or self._ingesting > 0

    def _log_ahead(self) -> bool:
        """Whether the log holds events appended since the last commit (on the DB thread)."""
        return self.store.max_seq() > self.store.cursor()[1]

    def _log_grew(self) -> bool:
        """Whether the log holds events appended since the last committed run and the last
        look (on the DB thread): imported by the CLI beside serve, they waited for serve's
        next POST or a restart. Once seen they are not tried again until more come: a run
        that fails on them is not repeated every few seconds."""
        top = self.store.max_seq()
        grew = top > max(self.store.cursor()[1], self._seen_seq)
        self._seen_seq = max(self._seen_seq, top)
        return grew

    def wake(self) -> None:
        """Ask for a run now (e.g. after the injected clock moved in live mode)."""
        self._wake.set()

    def subscribe(self) -> asyncio.Event:
        """An event set after each commit that stored alert transitions (and on shutdown)."""
        event = asyncio.Event()
        self._subscribers.append(event)
        return event

    async def shutdown(self) -> None:
        self.stopping.set()
        self._wake.set()
        for event in self._subscribers:
            event.set()
        async with self._progress:
            self._progress.notify_all()

    # -- readings (same data as the CLI) -----------------------------------------
    def status_json(self, year: int | None) -> dict[str, Any]:
        return self.engine.status(year)

    def alerts_json(self, all_: bool, department: str | None, year: int | None = None) -> list[dict[str, Any]]:
        return self.store.listed_alerts(every_transition=all_, department=department, fiscal_year=year)

    def reductions_json(self, year: int | None = None) -> list[dict[str, Any]]:
        return [p.to_json() for p in self.engine.reductions(year)]

    def health(self, reload: bool = True) -> dict[str, Any]:
        """``reload`` (on the DB thread): first pick up what another process committed."""
        clock = (self._fresh_monitor() if reload else self.engine.monitor).clock
        error = self.last_error or self.ingest_error
        return {
            "status": "error" if error else "ok",
            "mode": "live" if self.live else "event_time",
            "clock": iso(clock) if clock is not None else None,
            "runs": self.runs,
            # events POSTed and not yet covered, or appended by another process (a CLI
            # ingest) since the last commit (those said "pending: false" while they
            # waited), or a run under way (the store is then not read)
            "pending": self._processed < self._ingested or (self._log_ahead() if reload else self.busy()),
            "error": error,
        }


# -- HTTP handlers -------------------------------------------------------------------
SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
EVENTS_BODY_LIMIT: web.AppKey[int] = web.AppKey("events_body_limit", int)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes", "on")


def _request_id(request: web.Request, body: bytes) -> str:
    """The client's X-Request-ID, else one derived from the body: a body sent again (after
    a timeout, a 503) is the same request, and its dead letters are kept once — a random
    id made each re-send's rejections new (12,000 re-sends added 280k rows)."""
    given = request.headers.get("X-Request-ID", "")
    return given if _REQUEST_ID.match(given) else hashlib.sha256(body).hexdigest()[:16]


async def post_events(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await _read_at_most(request, request.app[EVENTS_BODY_LIMIT])
    request_id = _request_id(request, body)
    if not body.strip():
        return error_response(
            "请求体为空：POST /events 需要一个 JSON 事件、一个 JSON 数组"
            "或 JSON Lines（每行一个事件）",
            status=400,
        )
    counts, ticket = await service.ingest_body(body, request_id)
    answer: dict[str, Any] = {"request_id": request_id, **counts.to_json()}
    if _flag(request, "wait"):
        await service.wait(ticket)
        clock = service.engine.monitor.clock
        answer["processed"] = service.last_error is None
        answer["as_of"] = iso(clock) if clock is not None else None
        if service.last_error:
            answer["error"] = service.last_error
        elif clock is not None and (waiting := await service.db(service.waiting, clock)):
            answer["waiting"], answer["warning"] = waiting
    return json_response(answer, headers={"X-Request-ID": request_id})


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body of an events POST (past the access check), refused past ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            chunks.append(chunk)
    except web_protocol.RequestPayloadError as err:  # a gzip body that is not gzip: was a 500
        raise bad_request("请求体无法按其 Content-Encoding 解码，未接收任何内容：请检查压缩格式或去掉该请求头"
                          f"（cannot decode the body: {err}）") from None
    return b"".join(chunks)


async def get_metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    cached = service.last_scrape
    if service.busy() and cached is not None and time.monotonic() - cached[0] < SCRAPE_STAND_IN_SECONDS:
        # A run or a large POST holds the DB thread for seconds to minutes: a scrape
        # waiting behind it timed out (7 s in a run). The last one's series stand in —
        # for a while only: under a steady stream of POSTs the thread is nearly always
        # busy, and the lag gauges must move when it matters.
        body = cached[1]
    else:
        body = await service.db(generate_latest, service.registry)
        service.last_scrape = (time.monotonic(), body)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if service.busy():
        # A run (a replay: minutes) or a large POST (20 s for 210 MB) holds the DB thread; a
        # probe waiting for it would time out and could restart serve mid-way. This
        # process's own state is the news then.
        health = service.health(reload=False)
    else:
        health = await service.db(service.health)
    return json_response(health, status=503 if health["status"] != "ok" else 200)


def _year_param(request: web.Request) -> int | None:
    """``?year=`` as a fiscal year, or None; a bad one is a Chinese 400."""
    year_text = request.query.get("year")
    if not year_text:
        return None
    if not re.fullmatch(r"[0-9]{4}", year_text) or not EARLIEST_YEAR <= int(year_text) <= LATEST_YEAR:
        raise bad_request(f"参数 year={year_text!r} 不是年份（{EARLIEST_YEAR}–{LATEST_YEAR}）：请用如 ?year=2025")
    return int(year_text)


async def get_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    year = _year_param(request)
    try:
        data = await service.db(service.status_json, year)
    except ClockError:
        return error_response(
            "尚未处理任何事件：请先 POST /events 发送事件（或 `budgetwatch ingest` 后重启服务）",
            status=409,
        )
    return json_response(data)


# Every transition ever stored (?all=1: ~800k a year in a province) and the dead letters
# (a wrong file imported is one per line) are listed page by page.
PAGE_ROWS = 10_000
PAGE_ROWS_MAX = 100_000
STREAM_PAGE_ROWS = 2_000  # rows read per turn of the DB thread when the whole listing is asked for


def _count_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """``?name=`` as a whole number within [low, high] (``default`` if absent); else a Chinese 400."""
    text = request.query.get(name)
    if not text:
        return default
    if not re.fullmatch(r"[0-9]{1,12}", text) or not low <= int(text) <= high:
        raise bad_request(f"参数 {name}={text!r} 应为 {low}–{high} 之间的整数")
    return int(text)


async def get_alerts(request: web.Request) -> web.StreamResponse:
    """The active alerts, or with ?all=1 every transition (:func:`_paged`)."""
    service = request.app[SERVICE]
    department, year = request.query.get("department") or None, _year_param(request)
    if not _flag(request, "all"):
        if _asks_page(request):
            raise bad_request("参数 limit/after 用于分页读取全部变化记录，须与 all=1 同用")
        return json_response(await service.db(service.alerts_json, False, department, year))
    return await _paged(request, partial(service.store.transition_page, department=department, fiscal_year=year))


def _asks_page(request: web.Request) -> bool:
    return "limit" in request.query or "after" in request.query


async def _paged(request: web.Request, read: Callable[..., tuple[list[Any], int | None]]) -> web.StreamResponse:
    """A long listing, ``read(after=, limit=)`` on the DB thread. Asked with ?limit= (at
    most 100,000; 10,000 by default) or ?after=: the rows after the one numbered ?after=,
    and a page with more after it says where they start (``Link: <…>; rel="next"`` and
    ``X-Next-After``). Asked without: every row, the same JSON as the CLI, written a page
    at a time (the DB thread is free between pages, and the answer is never whole in
    memory)."""
    if not _asks_page(request):
        return await _streamed(request, read)
    limit = _count_param(request, "limit", PAGE_ROWS, 1, PAGE_ROWS_MAX)
    after = _count_param(request, "after", 0, 0, 10**12 - 1)
    rows, next_after = await request.app[SERVICE].db(partial(read, after=after, limit=limit))
    headers = {}
    if next_after is not None:
        following = request.rel_url.update_query(after=str(next_after), limit=str(limit))
        headers = {"Link": f'<{following}>; rel="next"', "X-Next-After": str(next_after)}
    return json_response(rows, headers=headers)


async def get_reductions(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return json_response(await service.db(service.reductions_json, _year_param(request)))


async def _streamed(request: web.Request, read: Callable[..., tuple[list[Any], int | None]]) -> web.StreamResponse:
    service = request.app[SERVICE]

    def page(after: int) -> tuple[int, list[Any], int | None]:
        generation = service.store.position()[2]  # before the rows: a rebuild after is seen next page
        rows, next_after = read(after=after, limit=STREAM_PAGE_ROWS)
        return generation, rows, next_after

    # The first page is read before the answer starts: an error there is a proper 503.
    generation, rows, next_after = await service.db(page, 0)
    response = web.StreamResponse(headers=JSON_HEADERS)
    response.content_type, response.charset = "application/json", "utf-8"
    await response.prepare(request)
    array = JsonArray()
    try:
        while True:
            await response.write(array.items(rows).encode())
            if next_after is None:
                break
            now, rows, next_after = await service.db(page, next_after)
            if now != generation:  # renumbered by a rebuild: the rest is another history
                raise StoreError("预警记录在输出过程中被重建（run --rebuild），请重新请求（rebuilt while listed）")
    except ConnectionResetError:
        log.debug("the client left a streamed listing")
        return response
    except Exception:
        # The 200 is under way: a second answer cannot follow it. The connection is cut,
        # so the client sees a broken transfer, never a short list that parses.
        log.exception("a streamed listing failed after its first page; the connection is closed")
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write(array.end().encode())
    await response.write_eof()
    return response


async def get_rejected(request: web.Request) -> web.StreamResponse:
    return await _paged(request, request.app[SERVICE].store.rejection_page)


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def cross_site_middleware(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """Refuse a state-changing request a browser sent on behalf of another site.

    A page on any website can make its visitor's browser POST a text/plain body to
    127.0.0.1:8080 (no preflight for a "simple" request): events, or — without a users
    file — dispositions and approvals. Browsers say where such a request comes from
    (``Sec-Fetch-Site``, ``Origin``); curl, scripts and budget systems send neither, so
    they are not affected."""
    if request.method in UNSAFE_METHODS and _cross_site(request):
        return error_response(
            "拒绝跨站请求：浏览器从其他网站发来的修改请求不予受理（cross-site request refused）",
            status=403,
        )
    response: web.StreamResponse = await handler(request)
    return response


def _cross_site(request: web.Request) -> bool:
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site:  # current browsers: exact, and right behind a proxy that rewrites Host
        return fetch_site in ("cross-site", "same-site")
    origin = request.headers.get("Origin")  # older browsers: compared with the Host asked for
    if origin is None:
        return False
    if origin == "null":  # an opaque origin: a sandboxed frame, a file, a redirect chain
        return True
    ours = {request.headers.get("Host", ""), request.headers.get("X-Forwarded-Host", "")} - {""}
    return origin.split("://", 1)[-1].rstrip("/") not in ours


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPRequestEntityTooLarge as err:  # aiohttp's own text is English text/plain
        limit = _LIMIT_IN_TEXT.search(err.text or "")
        return too_large_response(int(limit[1]) if limit else MAX_OTHER_BODY_BYTES)
    except web.HTTPException as err:
        if err.status in ROUTING_ERRORS and (err.text or "").startswith(f"{err.status}: "):
            return error_response(ROUTING_ERRORS[err.status], status=err.status)  # the router's own
        raise
    except BudgetwatchError as err:
        return error_response(str(err), status=409)
    except sqlite3.Error as err:
        # A full disk, a read-only or locked store: English text/plain 500 before. An
        # HTTP body is taken whole or not at all (ingest(atomic=True)), so say so.
        log.error("%s %s: storage error: %s", request.method, request.path, err)
        taken = "本次请求的事件均未接收，" if request.method == "POST" else ""
        return error_response(
            f"数据库操作失败：{err}。{taken}请检查磁盘空间、文件权限，或是否有其他进程长时间占用数据库后重试"
            f"（storage error: {err}）",
            status=503,
        )


def build_app(
    service: Service,
    *,
    routes: Iterable[RouteRegistrar] = (),
    workers: Iterable[Worker] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
) -> web.Application:
    """The aiohttp application: core routes, extra routes, the processor and workers."""
    app = web.Application(
        client_max_size=MAX_OTHER_BODY_BYTES, middlewares=[errors_middleware, cross_site_middleware]
    )
    app[SERVICE] = service
    app[EVENTS_BODY_LIMIT] = max_body_bytes
    app.router.add_post("/events", post_events)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_health)
    app.router.add_get("/api/status", get_status)
    app.router.add_get("/api/alerts", get_alerts)
    app.router.add_get("/api/reductions", get_reductions)
    app.router.add_get("/api/rejected", get_rejected)
    for registrar in routes:
        registrar(app, service)
    background = list(workers)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(service.run_processor(), name="budgetwatch-processor")]
        for worker in background:
            name = type(worker).__name__
            tasks.append(asyncio.create_task(worker.run_forever(service.stopping), name=name))
        service.wake()  # process whatever was logged before the start (CLI ingest, a crash)
        yield
        await service.shutdown()
        _done, still = await asyncio.wait(tasks, timeout=10)
        for task in still:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(lifecycle)
    return app


# -- workers ---------------------------------------------------------------------------
GRAFANA_CURSOR = "grafana_annotations_cursor"
# The derived-state generation the cursor counts in, and the business day of the last
# transition annotated: a rebuild numbers the transitions from 1 again.
GRAFANA_GENERATION = "grafana_annotations_generation"
GRAFANA_DAY = "grafana_annotations_day"
# The transitions of that day annotated (by alert and kind), and after a rebuild those
# still to be matched in the rebuilt day, which are not sent again.
GRAFANA_SCHEMA = """
CREATE TABLE IF NOT EXISTS grafana_day_sent (alert_id TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS grafana_day_skip (alert_id TEXT NOT NULL, kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS grafana_day_skip_by ON grafana_day_skip(alert_id, kind);
"""


class StoreHost(Protocol):
    """What an annotations worker needs: a store, a way to run on its thread, a wake-up
    after new transitions (a :class:`Service`, or the notifier's host)."""

    store: Store

    async def db(self, fn: Callable[..., T], *args: Any) -> T: ...

    def subscribe(self) -> asyncio.Event: ...


class GrafanaAnnotations:
    """Annotates each stored transition once, in order, tracked by a cursor in the store.

    Delivery is at-least-once: the cursor moves after Grafana accepted the
    annotation, so a crash between the two re-sends one annotation.
    """

    def __init__(
        self, service: StoreHost, annotator: GrafanaAnnotator, *, batch: int = 100,
        retry_seconds: float = 30.0, poll_seconds: float = 60.0,
    ) -> None:
        self.service = service
        self.annotator = annotator
        self.batch = batch
        self.retry_seconds = retry_seconds
        # Woken by this process's commits; another's (a CLI `run` beside serve) are
        # found by looking every so often.
        self.poll_seconds = poll_seconds
        self.sent = 0
        self.last_error: str | None = None
        self._flushing = asyncio.Lock()  # one flush at a time: each transition sent once
        self._ready = False  # its tables made
        self._skipping = False  # transitions of a rebuilt day to match against those sent

    def _pending(self) -> list[tuple[int, int, dict[str, Any]]]:
        store = self.service.store
        if not self._ready:
            store.db.executescript(GRAFANA_SCHEMA)
            self._ready = True
        after = int(store.meta(GRAFANA_CURSOR) or 0)
        generation = str(store.position()[2])
        counted_in = store.meta(GRAFANA_GENERATION)
        if counted_in is None:  # a new store, or a cursor of a release before the generation
            with self.service.store.transaction():
                self._place_of(after)
                self._write_meta({GRAFANA_GENERATION: generation})
        elif counted_in != generation:
            # Rebuilt since (`run --rebuild`): the numbers start over, and the history up to
            # where the annotations reached is there again — annotated already, under the
            # old numbers. Until the replay is back there, nothing is new; then what
            # follows the days before it is, but for the transitions of its last day that
            # were sent (known by alert and kind: the replay may make a day that serve
            # closed in several runs in another order).
            day = int(store.meta(GRAFANA_DAY) or 0)
            with store.transaction():  # read again under the write lock: no rebuild between
                clock, _, now = store.position()
                if clock is None or clock < day:
                    return []
                generation = str(now)
                (after,) = store.db.execute(
                    "SELECT coalesce(max(id), 0) FROM transitions WHERE day < ?", (day,)).fetchone()
                store.db.execute("INSERT INTO grafana_day_skip SELECT alert_id, kind FROM grafana_day_sent")
                store.db.execute("DELETE FROM grafana_day_sent")
                self._write_meta({GRAFANA_CURSOR: str(after), GRAFANA_GENERATION: generation})
        self._skipping = store.db.execute("SELECT 1 FROM grafana_day_skip LIMIT 1").fetchone() is not None
        rows = store.db.execute(
            "SELECT id, day, data FROM transitions WHERE id > ? ORDER BY id LIMIT ?", (after, self.batch)
        ).fetchall()
        return [(int(i), int(day), orjson.loads(d)) for i, day, d in rows]

    def _place_of(self, transition_id: int) -> None:
        """Where a cursor of an earlier release reached: the day of the transition numbered
        ``transition_id``, and its transitions up to it as sent."""
        if not transition_id:
            return
        db = self.service.store.db
        row = db.execute("SELECT day FROM transitions WHERE id <= ? ORDER BY id DESC LIMIT 1",
                         (transition_id,)).fetchone()
        if row is None:
            return
        db.execute("DELETE FROM grafana_day_sent")
        db.execute("INSERT INTO grafana_day_sent SELECT alert_id, kind FROM transitions WHERE day = ? AND id <= ?",
                   (row[0], transition_id))
        self._write_meta({GRAFANA_DAY: str(row[0])})

    def _advance(self, transition_id: int, day: int, alert_id: str, kind: str, send: bool) -> bool:
        """Move the cursor past one transition, noted as sent on its day. With ``send``
        False, only if it is one the rebuilt history's last annotated day had sent already
        (returns whether it moved; the caller annotates it first otherwise)."""
        store = self.service.store
        with self.service.store.transaction():
            last_day = int(store.meta(GRAFANA_DAY) or 0)
            if not send:
                if day > last_day:  # past that day: nothing more to match
                    store.db.execute("DELETE FROM grafana_day_skip")
                    self._skipping = False
                    return False
                matched = store.db.execute(
                    "DELETE FROM grafana_day_skip WHERE rowid = (SELECT rowid FROM grafana_day_skip"
                    " WHERE alert_id = ? AND kind = ? LIMIT 1)", (alert_id, kind)).rowcount
                if not matched:
                    return False
            if day != last_day:
                store.db.execute("DELETE FROM grafana_day_sent")
            store.db.execute("INSERT INTO grafana_day_sent(alert_id, kind) VALUES (?, ?)", (alert_id, kind))
            self._write_meta({GRAFANA_CURSOR: str(transition_id), GRAFANA_DAY: str(day)})
        return True

    def _write_meta(self, values: dict[str, str]) -> None:
        for key, value in values.items():  # within the caller's transaction: all or none
            self.service.store.set_meta(key, value)

    async def flush(self) -> int:
        """Send every pending transition; raises AnnotationError when Grafana fails."""
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int:
        sent = 0
        while True:
            rows = await self.service.db(self._pending)
            if not rows:
                return sent
            for transition_id, day, data in rows:
                alert_id, kind = data["alert_id"], data["transition"]
                if self._skipping and await self.service.db(self._advance, transition_id, day, alert_id, kind, False):
                    continue  # sent before a rebuild renumbered it
                await asyncio.to_thread(self.annotator.annotate, data)
                await self.service.db(self._advance, transition_id, day, alert_id, kind, True)
                sent += 1
                self.sent += 1

    async def run_forever(self, stop: asyncio.Event) -> None:
        wake = self.service.subscribe()
        while not stop.is_set():
            wake.clear()
            timeout = self.poll_seconds
            try:
                await self.flush()
                self.last_error = None
            except AnnotationError as err:
                self.last_error = str(err)
                log.warning("%s", err)
                timeout = self.retry_seconds
            except (sqlite3.Error, BudgetwatchError) as err:
                self.last_error = f"storage: {err}"
                log.exception("grafana annotations: storage error; retried in %.0f s", self.retry_seconds)
                timeout = self.retry_seconds
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=timeout)


def optional_workers(
    service: Service,
    *,
    grafana_url: str | None = None,
    grafana_token: str | None = None,
    departments: str | None = None,
) -> list[Worker]:
    """The background workers this installation has: Grafana annotations when
    GRAFANA_URL/GRAFANA_TOKEN are set, and the outbox dispatcher / Alertmanager
    pusher when ``streams.outbox`` provides ``service_workers(service)``."""
    found: list[Worker] = []
    if grafana_url:
        annotator = GrafanaAnnotator.from_url(grafana_url, grafana_token or "")
        found.append(GrafanaAnnotations(service, annotator))
    found.extend(outbox_workers(service, departments=departments))
    return found


def outbox_workers(service: Service, *, departments: str | None = None) -> list[Worker]:
    """Hook for notifications: ``streams.outbox.service_workers(service)`` if that module has it."""
    if importlib.util.find_spec("streams.outbox") is None:
        return []
    outbox = importlib.import_module("streams.outbox")
    factory = getattr(outbox, "service_workers", None)
    if factory is None:
        return []
    return list(factory(service, departments=departments))
