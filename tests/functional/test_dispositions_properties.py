"""Dispositions and approvals in random logs: one run against runs resumed anywhere."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import day
from tests.functional.engine_helpers import engine, ingest_events, one_run, outcome, resumed
from tests.strategies import PROJECTS, RUN_ENDS, _date, event_logs

RULES = ["low_execution", "behind_schedule", "stalled", "overspend", "progress_gap"]


@st.composite
def with_answers(draw: st.DrawFn) -> list[dict[str, Any]]:
    events = draw(event_logs(max_events=30))
    answers: list[dict[str, Any]] = []
    for n in range(draw(st.integers(0, 12))):
        pid = draw(st.sampled_from(PROJECTS))
        rule = draw(st.sampled_from(RULES))
        alert = f"2025:{rule}:project:{pid}"
        on = _date(draw(st.integers(150, 364 + 45)))  # into the next year, past the year's close
        if answers and draw(st.booleans()):
            target = draw(st.sampled_from(answers))
            answers.append({"type": "disposition_approved", "event_id": f"A{n}", "occurred_on": on,
                            "alert_id": target["alert_id"], "disposition_event_id": target["event_id"],
                            "approved": draw(st.booleans()), "by": "bureau"})
        else:
            action = draw(st.sampled_from(["continue", "reduce", "recover"]))
            ev = {"type": "alert_disposed", "event_id": f"D{n}", "occurred_on": on, "alert_id": alert,
                  "action": action, "note": "n", "by": "u"}
            if action != "continue":
                ev["amount"] = f"{draw(st.integers(1, 50000))}.00"
            answers.append(ev)
    order: list[dict[str, Any]] = draw(st.permutations(events + answers))
    return order


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), events=with_answers())
def test_one_run_and_runs_resumed_anywhere_agree_with_dispositions(
    data: st.DataObject, events: list[dict[str, Any]]
) -> None:
    """Answers and approvals among the events, all in the log at once: a run stopped
    and resumed anywhere, committing every few events, ends as one run does (review)."""
    until = data.draw(RUN_ENDS)
    stops = data.draw(st.lists(st.integers(day("2025-05-01"), until), max_size=4))
    commit_every = data.draw(st.integers(1, 50))
    with tempfile.TemporaryDirectory() as tmp:
        one = one_run(Path(tmp) / "one.db", events, until)
        reference = outcome(one)
        ref_rej = one.store.rejections()
        many = Path(tmp) / "many.db"
        store = engine(many).store
        ingest_events(store, events)
        store.close()
        status, transitions, alerts = resumed(many, stops, commit_every, until)
        e = engine(many)
        rej = e.store.rejections()
        e.store.close()
        assert [(t["alert_id"], t["transition"], t["date"]) for t in transitions] == [
            (t["alert_id"], t["transition"], t["date"]) for t in reference[1]]
        assert status == reference[0]
        assert transitions == reference[1]
        assert alerts == reference[2]
        assert sorted(r["reason"] for r in rej) == sorted(r["reason"] for r in ref_rej)
