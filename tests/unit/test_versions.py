"""Last-writer-wins versions as one string order exactly like (day, event_id) tuples."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from budget.ledger import ProjectState
from budget.versions import stored_version, version

days = st.integers(1, dt.date.max.toordinal())
event_ids = st.text(min_size=1, max_size=12)


@given(a=st.tuples(days, event_ids), b=st.tuples(days, event_ids))
def test_string_order_is_tuple_order(a: tuple[int, str], b: tuple[int, str]) -> None:
    assert (version(*a) < version(*b)) == (a < b)
    assert (version(*a) == version(*b)) == (a == b)


@given(day=days, event_id=event_ids)
def test_state_stored_with_the_older_pair_form_still_loads(day: int, event_id: str) -> None:
    assert stored_version([day, event_id]) == version(day, event_id)
    assert stored_version(version(day, event_id)) == version(day, event_id)


def test_a_state_round_trips_and_old_rows_load_the_same() -> None:
    state = ProjectState("P", approved=100, approved_on=739000, approved_version=version(739000, "E1"))
    data = state.to_dict()
    assert ProjectState.from_dict(data).approved_version == version(739000, "E1")
    older = {**data, "approved_version": [739000, "E1"]}
    assert ProjectState.from_dict(older) == ProjectState.from_dict(data)
    assert stored_version(None) is None
