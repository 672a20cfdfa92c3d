"""Last-writer-wins versions as one string order exactly like (day, event_id) tuples."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from budget.versions import version, version_from_json, version_to_json

days = st.integers(1, dt.date.max.toordinal())
event_ids = st.text(min_size=1, max_size=12)


@given(a=st.tuples(days, event_ids), b=st.tuples(days, event_ids))
def test_string_order_is_tuple_order(a: tuple[int, str], b: tuple[int, str]) -> None:
    assert (version(*a) < version(*b)) == (a < b)
    assert (version(*a) == version(*b)) == (a == b)


@given(day=days, event_id=event_ids)
def test_the_stored_form_is_the_day_and_id_pair(day: int, event_id: str) -> None:
    stored = version_to_json(version(day, event_id))
    assert stored == [day, event_id]
    assert version_from_json(stored) == version(day, event_id)


def test_none_stays_none() -> None:
    assert version_to_json(None) is None and version_from_json(None) is None
