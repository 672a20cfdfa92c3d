"""`budgetwatch dispose` and `budgetwatch hash-password`: the disposition loop from the shell."""

from __future__ import annotations

import datetime as dt
import getpass
import uuid
from typing import Annotated, Any

import orjson
import typer
from rich.markup import escape

from alerts.dispositions import ACTION_NAMES, ACTIONS, NEEDS_APPROVAL, adjustment_problem
from budget.calendar import iso
from budget.events import EventRejected, parse_event_object
from budget.ledger import ProjectState
from budget.money import to_fen
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
    if not note.strip():
        raise BudgetwatchError("请填写处置说明 --note：原因与整改措施（处置不能没有说明）")
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
        alert = store.alert_row(alert_id)
        if alert is None:
            raise BudgetwatchError(f"预警 {alert_id} 不存在：用 `budgetwatch alerts --all` 查看预警编号")
        warning = _adjustment_warning(store, alert, action, event.get("amount"))
        counts = ingest(store, parse_lines([orjson.dumps(event)], "cli:dispose"))
    if as_json:
        emit_json({"event": event, **counts.to_json()})
        return
    state = "已追加" if counts.applied else "重复（已存在相同 event_id）"
    out = render.console()
    out.print(
        f"处置事件 {event['event_id']} {state}：{alert_id} → {ACTION_NAMES.get(action, action)}"
        f"（{day}，{event['by']}）；运行 `budgetwatch run` 或由 serve 处理后生效",
        highlight=False,
    )
    if warning:
        out.print(f"[yellow]注意：按当前台账，{escape(warning)}；处理时将被拒收（见 `budgetwatch rejected`）[/yellow]")


def _adjustment_warning(store: Store, alert: dict[str, Any], action: str, amount: Any) -> str | None:
    """What processing will refuse in a reduce/recover (the desk's own check), judged by
    the ledger as last run: later events may still change the unspent budget, so this
    warns, not refuses."""
    if action not in NEEDS_APPROVAL or amount is None:
        return None
    row = store.db.execute("SELECT state FROM projects WHERE project_id = ?", (alert["subject_id"],)).fetchone()
    state = ProjectState.from_dict(orjson.loads(row[0])) if row is not None else None
    return adjustment_problem(alert["subject_type"], alert["subject_id"], state, to_fen(str(amount)), action)


@app.command("hash-password")
def hash_password_cmd(
    secret: Annotated[str | None, typer.Option("--secret", help="要哈希的密码或令牌（默认交互输入，不回显）")] = None,
) -> None:
    """Print the scrypt hash of a password or API token for the users file."""
    value = secret if secret is not None else getpass.getpass("密码或令牌：")
    if not value:
        raise BudgetwatchError("空密码不能使用")
    typer.echo(hash_secret(value))
