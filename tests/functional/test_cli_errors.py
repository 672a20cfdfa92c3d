"""The CLI on the wrong foot: every mistake is a clear message and exit code 2, never a
traceback, and nothing is created, replaced or lost by it (the real console script)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests import builders as b
from tests.functional.test_cli import cli


def test_demo_never_replaces_a_store_it_did_not_make(tmp_path: Path) -> None:
    real = tmp_path / "budgetwatch.db"
    backup = tmp_path / "budgetwatch.db.bak-2025-09-30"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([b.registered("P1"), b.approved("P1", "1000")]))
    cli(real, "ingest", str(events))
    backup.write_bytes(real.read_bytes())
    answer = cli(real, "demo", "--dir", str(tmp_path), "--projects", "50", check=False)
    assert answer.returncode == 2 and "was not made by `budgetwatch demo`" in answer.stdout
    assert "Traceback" not in answer.stderr
    assert backup.exists() and json.loads(cli(real, "rejected", "--json").stdout) == []
    assert sqlite3.connect(real).execute("SELECT COUNT(*) FROM events").fetchone() == (2,)
    demo = tmp_path / "demo"
    for _ in range(2):  # its own store it replaces, run after run
        assert cli(real, "demo", "--dir", str(demo), "--projects", "50").returncode == 0
    assert (demo / "budgetwatch.db").exists() and (demo / ".budgetwatch-demo").exists()
    (demo / ".budgetwatch-demo").unlink()  # a demo directory made before the marker existed
    assert cli(real, "demo", "--dir", str(demo), "--projects", "50").returncode == 0


def test_read_commands_refuse_a_store_that_is_not_there(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for command in (["alerts", "--json"], ["status"], ["reductions", "--xlsx", str(tmp_path / "r.xlsx")], ["rejected"],
                    ["outbox"]):
        answer = cli(typo, *command, check=False)
        assert answer.returncode == 2 and "no budgetwatch store at" in answer.stdout, command
    assert not typo.exists() and not (tmp_path / "r.xlsx").exists()


def test_a_mistyped_as_of_creates_nothing_and_leaves_a_rebuild_undone(tmp_path: Path) -> None:
    """The date is checked before the store is opened: `run --rebuild` with a bad date
    once wiped every alert and replayed nothing, and a typo'd --db was created."""
    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([b.registered("P1", on="2025-01-02"), b.approved("P1", "1000000", on="2025-01-02")]))
    cli(db, "ingest", str(events))
    cli(db, "run", "--as-of", "2025-07-01")
    before = json.loads(cli(db, "alerts", "--json").stdout)
    assert before  # nothing paid by the 06-30 checkpoint
    answer = cli(db, "run", "--rebuild", "--as-of", "2025-09-31", check=False)
    assert answer.returncode == 2 and "YYYY-MM-DD" in answer.stdout + answer.stderr
    assert json.loads(cli(db, "alerts", "--json").stdout) == before
    # the forms file import reads are dates here too
    cli(db, "run", "--as-of", "2025/7/2")
    assert json.loads(cli(db, "status", "--json").stdout)["as_of"] == "2025-07-02"
    typo = tmp_path / "typo.db"
    assert cli(typo, "run", "--as-of", "30.09.2025", check=False).returncode == 2
    assert not typo.exists()
    assert cli(db, "run", "--commit-every", "0", check=False).returncode == 2


def test_a_file_refused_whole_refuses_the_import_before_any_file_goes_in(tmp_path: Path) -> None:
    """`ingest good.jsonl bad.csv` printed only bad.csv's error, yet good.jsonl was in."""
    db = tmp_path / "bw.db"
    good = tmp_path / "good.jsonl"
    good.write_bytes(b.jsonl([b.registered("P1", on="2025-01-02")]))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n", "utf-8")
    renamed = tmp_path / "old.xlsx"
    renamed.write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 64)
    for refused in (bad, renamed):
        answer = cli(db, "ingest", str(good), str(refused), check=False)
        said = answer.stdout + answer.stderr
        assert answer.returncode == 2 and "均未导入" in said, said
        assert "Traceback" not in said
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM events").fetchone() == (0,)
    assert cli(db, "ingest", str(good)).returncode == 0


def test_names_and_paths_with_brackets_are_printed_as_they_are(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    events = tmp_path / "pay[v2].jsonl"
    events.write_bytes(b.jsonl([
        b.registered("P1", name="老旧小区改造[/二期]", on="2025-01-02"), b.approved("P1", "1000000", on="2025-01-02"),
    ]) + b'[bold]oops\n')
    assert cli(db, "ingest", str(events)).returncode == 0
    cli(db, "run", "--as-of", "2025-07-01")
    for command in ("status", "alerts", "reductions"):
        answer = cli(db, command)
        assert "老旧小区改造[/二期]" in answer.stdout, command
    (row,) = json.loads(cli(db, "rejected", "--json").stdout)
    assert (row["source"], row["raw"]) == (f"{events}:3", "[bold]oops")
    assert "[bold]oops" in cli(db, "rejected").stdout  # the table shows the input as it was


def test_an_unwritable_path_or_a_bad_setting_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([b.registered("P1"), b.approved("P1", "1000")]))
    cli(db, "ingest", str(events))
    nowhere = tmp_path / "missing-dir" / "x.xlsx"
    for args in (("reductions", "--xlsx", str(nowhere)), ("generate", "--projects", "5", "--out", str(nowhere))):
        answer = cli(db, *args, check=False)
        assert answer.returncode == 2 and "missing-dir" in answer.stdout and "Traceback" not in answer.stderr, args
        assert "无法读写文件" in answer.stdout, args
    import os
    import subprocess

    from tests.functional.test_cli import BIN

    env = {**os.environ, "BUDGETWATCH_DB": str(db), "BUDGETWATCH_SMTP_PORT": "abc"}
    answer = subprocess.run([str(BIN), "alerts"], env=env, capture_output=True, text=True, timeout=60)
    assert answer.returncode == 2 and "smtp_port='abc'" in answer.stdout and "BUDGETWATCH_" in answer.stdout
    assert "配置取值无效" in answer.stdout


def test_reading_while_a_batch_holds_the_write_lock_does_not_wait_for_it(tmp_path: Path) -> None:
    """A run's batch holds the write lock for a whole commit interval; `alerts` waited
    30 s for it and then blamed the file."""
    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([b.registered("P1"), b.approved("P1", "1000"), b.payment("P1", "1", on="2025-02-01")]))
    cli(db, "ingest", str(events))
    cli(db, "run", "--as-of", "2025-07-01")
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        answer = cli(db, "alerts", "--json", check=False)
        assert answer.returncode == 0 and {a["rule"] for a in json.loads(answer.stdout)} >= {"low_execution"}
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_serve_that_cannot_listen_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """It used to process the whole log first (clock 09-30 → 12-31 for good) and only
    then find the port taken."""
    import socket

    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([b.registered("P1"), b.approved("P1", "1000"),
                                b.payment("P1", "1", on="2025-02-01"), b.payment("P1", "1", on="2025-12-20")]))
    cli(db, "ingest", str(events))
    cli(db, "run", "--as-of", "2025-09-30")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = str(taken.getsockname()[1])
        answer = cli(db, "serve", "--host", "127.0.0.1", "--port", port, check=False)
    finally:
        taken.close()
    assert answer.returncode == 2 and "无法在 127.0.0.1:" in answer.stdout and "数据库未被改动" in answer.stdout
    assert json.loads(cli(db, "status", "--json").stdout)["as_of"] == "2025-09-30"


def test_serve_listens_on_one_port_on_every_address_of_its_host(monkeypatch: Any) -> None:
    import socket

    from streams.cli_service import _listen

    real = socket.getaddrinfo

    def two_addresses(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        return [*real("127.0.0.1", port, *args, **kwargs), *real("127.0.0.2", port, *args, **kwargs)]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    listeners = _listen("h", 0)
    try:
        names = [s.getsockname() for s in listeners]
        assert [n[0] for n in names] == ["127.0.0.1", "127.0.0.2"] and names[0][1] == names[1][1] != 0
    finally:
        for s in listeners:
            s.close()


def test_version_is_the_installed_distribution() -> None:
    from importlib.metadata import version

    from typer.testing import CliRunner

    from streams.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"budgetwatch {version('budgetwatch')}"


def test_tls_and_starttls_together_are_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both set, every email failed later with aiosmtplib's English ValueError (audit)."""
    from pydantic import ValidationError

    from streams.settings import Settings

    monkeypatch.setenv("BUDGETWATCH_SMTP_TLS", "true")
    monkeypatch.setenv("BUDGETWATCH_SMTP_STARTTLS", "true")
    with pytest.raises(ValidationError, match="BUDGETWATCH_SMTP_TLS 与 BUDGETWATCH_SMTP_STARTTLS 只能设一个"):
        Settings()


@pytest.mark.parametrize("address", ["budget.example.gov.cn", "ftp://budget.example", "http://"])
def test_a_board_address_that_is_no_web_address_is_refused(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """Alertmanager would carry it as each alert's link: a bare host name made relative
    links that led nowhere."""
    from pydantic import ValidationError

    from streams.settings import Settings

    monkeypatch.setenv("BUDGETWATCH_BOARD_URL", address)
    with pytest.raises(ValidationError, match="board_url"):
        Settings()
    monkeypatch.setenv("BUDGETWATCH_BOARD_URL", "https://budget.example.gov.cn/bw")
    assert Settings().board_url == "https://budget.example.gov.cn/bw"


@pytest.mark.parametrize("command", ["status", "reductions"])
def test_a_mistyped_year_is_a_usage_error_naming_the_range(tmp_path: Path, command: str) -> None:
    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_bytes(b.jsonl([b.registered("P1"), b.approved("P1", "1000")]))
    cli(db, "ingest", str(events))
    cli(db, "run", "--as-of", "2025-03-01")
    for year in ("20266", "0", "9999"):
        answer = cli(db, command, "--year", year, check=False)
        assert answer.returncode == 2 and "Traceback" not in answer.stderr, (year, answer.stderr)
        bound = "2100" if int(year) > 2100 else "1990"
        assert "Invalid value for '--year'" in answer.stderr and bound in answer.stderr
