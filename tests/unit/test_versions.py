"""Last-writer-wins versions as one string order exactly like (day, event_id) tuples."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from budget.ledger import ProjectState
from budget.versions import stored_version, version, version_pair

days = st.integers(1, dt.date.max.toordinal())
event_ids = st.text(min_size=1, max_size=12)


@given(a=st.tuples(days, event_ids), b=st.tuples(days, event_ids))
def test_string_order_is_tuple_order(a: tuple[int, str], b: tuple[int, str]) -> None:
    assert (version(*a) < version(*b)) == (a < b)
    assert (version(*a) == version(*b)) == (a == b)


@given(day=days, event_id=event_ids)
def test_state_stored_with_the_older_pair_form_still_loads(day: int, event_id: str) -> None:
    assert version(day, event_id) == f"{day:07d}:{event_id}"  # the form stored by earlier releases
    assert stored_version([day, event_id]) == version(day, event_id)
    assert stored_version(version(day, event_id)) == version(day, event_id)


@given(day=days, event_id=event_ids)
def test_stored_state_keeps_the_pair_an_earlier_release_reads(day: int, event_id: str) -> None:
    state = ProjectState("P", approved=100, approved_on=day, approved_version=version(day, event_id))
    data = state.to_dict()
    # What code before versions were strings does with it: (int(v[0]), str(v[1])).
    assert (int(data["approved_version"][0]), str(data["approved_version"][1])) == (day, event_id)
    assert ProjectState.from_dict(data) == state


def test_none_stays_none() -> None:
    assert version_pair(None) is None and stored_version(None) is None
