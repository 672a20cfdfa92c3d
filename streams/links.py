"""Links into the warning board, for its own pages and for messages that point at it."""

from __future__ import annotations

from urllib.parse import quote


def path_segment(value: object) -> str:
    """An id as one URL path segment: a project code with /, ?, # or % in it must not
    lead a link, a form or a redirect to another page (as board.js encodes them)."""
    return quote(str(value), safe=":")


def alert_link(board_url: str | None, alert_id: str) -> str | None:
    """The alert's page on the board at ``board_url`` (its public address), if one is set."""
    if not board_url:
        return None
    return f"{board_url.rstrip('/')}/alerts/{path_segment(alert_id)}"
