"""The CLI's streamed JSON array prints exactly what the whole list printed."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.cli import emit_json, emit_json_array

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)


def printed(emit: Any, data: Any) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit(data)
    return out.getvalue()


@given(st.lists(JSON, max_size=5))
def test_a_streamed_array_is_the_whole_list_printed(items: list[Any]) -> None:
    streamed = printed(lambda rows: emit_json_array(iter(rows)), items)
    assert streamed == printed(emit_json, items)
    assert json.loads(streamed) == items
