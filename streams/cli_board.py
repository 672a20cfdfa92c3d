"""`budgetwatch dispose` and `budgetwatch hash-password`: the disposition loop from the shell."""

from __future__ import annotations

import datetime as dt
import getpass
import uuid
from typing import Annotated, Any

import orjson
import typer

from alerts.dispositions import ACTION_NAMES, ACTIONS
from budget.calendar import iso
from budget.events import EventRejected, parse_event_object
from connectors.jsonl import parse_lines
from streams import render
from streams.auth import hash_secret
from streams.cli import DbOption, JsonOption, app, emit_json, settings
from streams.errors import BudgetwatchError
from streams.ingest import ingest
from streams.store import Store

ACTION_HELP = "处置方式: " + ", ".join(f"{a} ({ACTION_NAMES[a]})" for a in ACTIONS)


@app.command("dispose")
def dispose_cmd(
    alert_id: Annotated[str, typer.Argument(help="预警编号, e.g. 2025:low_execution:project:P001")],
    action: Annotated[str, typer.Option("--action", help=ACTION_HELP)],
    note: Annotated[str, typer.Option("--note", help="处置说明（原因、整改措施）")],
    amount: Annotated[str | None, typer.Option("--amount", help="金额（元），reduce / recover 必填")] = None,
    by: Annotated[str | None, typer.Option("--by", help="处置人（默认：当前系统用户）")] = None,
    on: Annotated[str | None, typer.Option("--on", help="业务日期 YYYY-MM-DD（默认：存储的业务时钟）")] = None,
    event_id: Annotated[str | None, typer.Option("--event-id", help="事件编号（默认随机生成）")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Append an alert_disposed event to the log (processed by the next `run` / `serve`)."""
    with Store(db or settings().db, existing=True) as store:
        clock, _ = store.cursor()
        day = on or (iso(clock) if clock is not None else dt.date.today().isoformat())
        event: dict[str, Any] = {
            "type": "alert_disposed", "event_id": event_id or f"disp-{uuid.uuid4().hex}", "occurred_on": day,
            "alert_id": alert_id, "action": action, "note": note, "by": by or getpass.getuser(),
        }
        if amount is not None:
            event["amount"] = amount
        try:
            parse_event_object(event)
        except EventRejected as err:
            raise BudgetwatchError(f"处置无效：{err.reason}") from None
        exists = store.db.execute("SELECT 1 FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        if exists is None:
            raise BudgetwatchError(f"预警 {alert_id} 不存在：用 `budgetwatch alerts --all` 查看预警编号")
        counts = ingest(store, parse_lines([orjson.dumps(event)], "cli:dispose"))
    if as_json:
        emit_json({"event": event, **counts.to_json()})
        return
    state = "已追加" if counts.applied else "重复（已存在相同 event_id）"
    render.console().print(
        f"处置事件 {event['event_id']} {state}：{alert_id} → {ACTION_NAMES.get(action, action)}"
        f"（{day}，{event['by']}）；运行 `budgetwatch run` 或由 serve 处理后生效",
        highlight=False,
    )


@app.command("hash-password")
def hash_password_cmd(
    secret: Annotated[str | None, typer.Option("--secret", help="要哈希的密码或令牌（默认交互输入，不回显）")] = None,
) -> None:
    """Print the scrypt hash of a password or API token for the users file."""
    value = secret if secret is not None else getpass.getpass("密码或令牌：")
    if not value:
        raise BudgetwatchError("空密码不能使用")
    typer.echo(hash_secret(value))
