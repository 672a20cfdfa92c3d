"""WeCom group robot (企业微信群机器人): markdown message to the robot's webhook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from connectors.notify import DEDUP_HEADER, Note, header_value
from connectors.notify.http import check_errcode, post_json

# 45009: API call frequency exceeded (20 messages a minute per robot).
RATE_LIMITED = frozenset({45009})
MAX_BYTES = 4096  # WeCom rejects markdown content longer than 4096 bytes


CUT = "……（内容过长已截断，完整内容见预警看板）"


def wecom_body(note: Note) -> dict[str, Any]:
    return {"msgtype": "markdown", "markdown": {"content": fit(note.text.markdown)}}


def fit(content: str) -> str:
    """The content within WeCom's limit. The longest line gives way — the situation (a
    long 处置说明), not the recommended action and the alert id after it, which a cut at
    the end dropped; only when that is not enough is the end cut."""
    size = len(content.encode())
    if size <= MAX_BYTES:
        return content
    over = size - MAX_BYTES + len(CUT.encode())
    lines = content.split("\n")
    longest = max(range(len(lines)), key=lambda n: len(lines[n].encode()))
    line = lines[longest].encode()
    if len(line) > over + 64:  # enough of it is left to read
        lines[longest] = line[: len(line) - over].decode(errors="ignore") + CUT
        shortened = "\n".join(lines)
        if len(shortened.encode()) <= MAX_BYTES:
            return shortened
    return content.encode()[: MAX_BYTES - 8].decode(errors="ignore") + "\n……"


@dataclass(slots=True)
class WeComChannel:
    url: str
    client: httpx.AsyncClient
    name: str = "wecom"

    async def send(self, note: Note) -> None:
        response = await post_json(
            self.client, self.url, wecom_body(note), headers={DEDUP_HEADER: header_value(note.dedup_key)}
        )
        check_errcode(self.url, response, rate_limited=RATE_LIMITED)
