"""CLI for notifications: `budgetwatch outbox`, `deliver`, `alertmanager-config`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from budget.calendar import CHINA_TIME
from connectors.alertmanager import build_config
from connectors.directory import Directory, DirectoryError, load_directory
from streams import render
from streams.cli import DbOption, JsonOption, app, emit_json, log_to_stderr, settings
from streams.outbox import (
    DELIVERED,
    FAILED,
    NO_CHANNEL,
    PENDING,
    STATUSES,
    DeliveryLog,
    Dispatcher,
    NotifyConfigError,
)
from streams.store import Store

DepartmentsOption = Annotated[
    str | None,
    typer.Option("--departments", help="department directory YAML [env BUDGETWATCH_DEPARTMENTS]"),
]
STATUS_NAMES = {PENDING: "待投递", DELIVERED: "已投递", FAILED: "投递失败"}
CHANNEL_NAMES = {
    "webhook": "Webhook",
    "dingtalk": "钉钉",
    "wecom": "企业微信",
    "email": "邮件",
    NO_CHANNEL: "（无通道）",
}


def _directory(path: str | None, *, required: bool) -> Directory | None:
    path = path or settings().departments
    if not path:
        if required:
            raise NotifyConfigError(
                "未指定部门目录：请用 --departments 或环境变量 BUDGETWATCH_DEPARTMENTS"
                " 指向目录 YAML"
                "（示例见 examples/departments.yaml）"
            )
        return None
    try:
        return load_directory(path)
    except DirectoryError as err:
        raise NotifyConfigError(str(err)) from None


def _open_log(db: str | None) -> DeliveryLog:
    path = db or settings().db
    Store(path, existing=True).close()  # reading: a mistyped --db must not answer "nothing pending"
    return DeliveryLog(path)


def _totals(summary: dict[str, dict[str, int]]) -> dict[str, int]:
    """Deliveries by status over every channel, from ``DeliveryLog.summary()``."""
    return {s: sum(c.get(s, 0) for c in summary.values()) for s in STATUSES}


def _summary_table(summary: dict[str, dict[str, int]], backlog: int) -> Table:
    # The backlog in a caption of its own: in the title it wrapped mid-number on a
    # table this narrow.
    table = Table(title="通知投递情况", caption=f"尚未分发的预警变动 {backlog} 条", caption_justify="left")
    table.add_column("通道")
    for status in STATUSES:
        table.add_column(STATUS_NAMES[status], justify="right")
    for channel in sorted(summary):
        counts = summary[channel]
        table.add_row(
            CHANNEL_NAMES.get(channel, channel), *(str(counts.get(s, 0)) for s in STATUSES)
        )
    return table




def _beijing(moment: str | None) -> str:
    """An ISO time (UTC in the JSON) as a bureau reads it: Beijing time."""
    if not moment:
        return "—"
    return dt.datetime.fromisoformat(moment).astimezone(CHINA_TIME).strftime("%m-%d %H:%M:%S")


# The two recipients that are not a department (alerts.notification_text.AUDIENCE_PREFIX).
RECIPIENT_NAMES = {"default": "默认联系人（未配置通道的单位）", "escalation": "财政局（升级抄送）"}


def _rows_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for label in ("状态", "通道", "接收方", "预警", "变动", "尝试次数", "下次尝试（北京时间）", "最后错误"):
        table.add_column(label, overflow="fold")
    failing: set[tuple[str, str]] = set()  # queues whose head has failed: the rest wait behind it
    for r in rows:
        queue = (r["recipient"], r["channel"])
        note = r["last_error"] or ""
        if r["status"] == PENDING:
            if r["attempts"]:
                failing.add(queue)
            elif queue in failing:
                note = "排在同一通道一条失败待重试的通知之后（按顺序投递）"
        table.add_row(
            STATUS_NAMES.get(r["status"], r["status"]),
            CHANNEL_NAMES.get(r["channel"], r["channel"]),
            RECIPIENT_NAMES.get(r["recipient"], r["recipient"]),
            r["alert_id"],
            render.kind_label(r),
            str(r["attempts"]),
            _beijing(r["next_attempt"]),
            note,
        )
    return table


@app.command("outbox")
def outbox_cmd(
    db: DbOption = None,
    as_json: JsonOption = False,
    show_all: Annotated[bool, typer.Option("--all", help="list delivered ones too")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="re-queue failed deliveries (after fixing the cause)"),
    ] = False,
    limit: Annotated[int, typer.Option(help="rows to list")] = 200,
) -> None:
    """Notification deliveries: pending, failed (with the last error) and delivered counts."""
    log = _open_log(db)
    try:
        requeued = log.retry_failed() if retry_failed else 0
        statuses = STATUSES if show_all else (PENDING, FAILED)
        summary, backlog, rows = log.summary(), log.backlog(), log.rows(statuses, limit)
    finally:
        log.close()
    totals = _totals(summary)
    if as_json:
        emit_json(
            {
                "totals": totals,
                "by_channel": summary,
                "outbox_backlog": backlog,
                "requeued": requeued,
                "deliveries": rows,
            }
        )
        return
    out = render.console()
    if retry_failed:
        out.print(f"已重新排队 {requeued} 条失败的投递")
    out.print(_summary_table(summary, backlog))
    if rows:
        out.print(_rows_table(rows, "全部投递" if show_all else "待投递与失败的投递"))
    out.print(
        f"pending={totals[PENDING]} failed={totals[FAILED]} "
        f"delivered={totals[DELIVERED]} backlog={backlog}",
        highlight=False,
    )


@app.command("deliver")
def deliver_cmd(
    db: DbOption = None,
    departments: DepartmentsOption = None,
    once: Annotated[bool, typer.Option("--once", help="one round, then exit")] = False,
    alertmanager_url: Annotated[
        str | None, typer.Option("--alertmanager-url", help="[env BUDGETWATCH_ALERTMANAGER_URL]")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Deliver notifications from the outbox (and push to Alertmanager), once or until stopped."""
    s = settings()
    directory = _directory(departments, required=False)
    if directory is None and not (alertmanager_url or s.alertmanager_url):
        raise NotifyConfigError(
            "没有可投递的目标：请设置 BUDGETWATCH_DEPARTMENTS（或 --departments）和/或 "
            "BUDGETWATCH_ALERTMANAGER_URL（或 --alertmanager-url）"
        )
    with Store(db or s.db, existing=True) as store:
        path = store.path

    async def main() -> Any:
        overrides: dict[str, Any] = {}
        if alertmanager_url:
            overrides["alertmanager_url"] = alertmanager_url
        dispatcher = Dispatcher.from_settings(path, s, directory=directory, **overrides)
        if once:  # the summary below reports the errors; no log lines as well
            logging.getLogger("budgetwatch.outbox").setLevel(logging.ERROR)
            try:
                return await dispatcher.run_once()
            finally:
                await dispatcher.aclose()
        log_to_stderr()  # what each round did and skipped (history, a year's close), failures
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        render.console().print(
            f"开始投递通知（每 {dispatcher.poll_interval:g} 秒检查一次；Ctrl-C 停止）"
        )
        await dispatcher.run_forever(stop)
        return None

    stats = asyncio.run(main())
    if stats is None:
        return
    if as_json:
        emit_json(stats.to_json())
        return
    out = render.console()
    out.print(
        f"分发预警变动 {stats.fanned_out} 条，新建投递 {stats.created} 条，"
        f"投递成功 {stats.delivered} 条，"
        f"失败待重试 {stats.failed_attempts - stats.gave_up} 条，放弃 {stats.gave_up} 条；"
        f"推送 Alertmanager {stats.alertmanager_pushed} 条",
        highlight=False,
    )
    if stats.paced:
        out.print(
            f"[yellow]{stats.paced} 个通知队列的钉钉/企业微信机器人已达每分钟 20 条的上限，"
            "其余通知顺延到下一轮发送[/yellow]",
            highlight=False,
        )
    if stats.skipped_historical:
        out.print(
            f"[yellow]{stats.skipped_historical} 条预警变动属于历史数据（早于业务日期 {s.notify_horizon_days} 天以上"
            "且预警已解除，或其预警从未通知过），未通知；仍可用 `budgetwatch alerts --all` 查看"
            "（设置 BUDGETWATCH_NOTIFY_HORIZON_DAYS=0 则全部通知）[/yellow]",
            highlight=False,
        )
    if stats.skipped_year_closed:
        out.print(
            f"{stats.skipped_year_closed} 条预警随所属年度结束而关闭（年度结束），无需通知；"
            "仍可用 `budgetwatch alerts --all` 查看",
            highlight=False,
        )
    log = DeliveryLog(path)  # what one round left: each queue sends a bounded number per round
    try:
        pending = _totals(log.summary())[PENDING]
    finally:
        log.close()
    if pending:
        out.print(
            f"[yellow]仍有 {pending} 条通知待投递（每个接收方与通道每轮最多发送一批，或等待重试）："
            "再运行 `budgetwatch deliver --once`，或用不带 --once 的 deliver / serve 持续投递[/yellow]",
            highlight=False,
        )
    for error in stats.errors[:20]:
        out.print(f"[yellow]{escape(error)}[/yellow]", highlight=False)
    if stats.alertmanager_error:
        out.print(f"[yellow]{escape(stats.alertmanager_error)}[/yellow]", highlight=False)


@app.command("alertmanager-config")
def alertmanager_config_cmd(
    departments: DepartmentsOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None,
    group_wait: Annotated[str, typer.Option(help="route group_wait")] = "30s",
    group_interval: Annotated[str, typer.Option(help="route group_interval")] = "5m",
    repeat_interval: Annotated[str, typer.Option(help="route repeat_interval")] = "4h",
    resolve_timeout: Annotated[str, typer.Option(help="global resolve_timeout")] = "5m",
) -> None:
    """Generate an alertmanager.yml routing by the `department` label from the directory."""
    directory = _directory(departments, required=True)
    assert directory is not None
    s = settings()
    smarthost = f"{s.smtp_host}:{s.smtp_port}" if s.smtp_host else None
    config = build_config(
        directory,
        smtp_smarthost=smarthost,
        smtp_from=s.smtp_from,
        smtp_username=s.smtp_user,
        smtp_password=s.smtp_password,
        smtp_require_tls=s.smtp_starttls,
        group_wait=group_wait,
        group_interval=group_interval,
        repeat_interval=repeat_interval,
        resolve_timeout=resolve_timeout,
    )
    header = "# generated by `budgetwatch alertmanager-config` from the department directory\n"
    text = header + yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    if smarthost is None and any(c.email for c in [*directory.departments.values()]):
        print(
            "警告：未设置 BUDGETWATCH_SMTP_HOST，生成的配置不含邮件接收方（仅 webhook）",
            file=sys.stderr,
        )
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
