"""WeCom group robot (企业微信群机器人): markdown message to the robot's webhook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from connectors.notify import DEDUP_HEADER, Note
from connectors.notify.http import check_errcode, post_json

# 45009: API call frequency exceeded (20 messages a minute per robot).
RATE_LIMITED = frozenset({45009})
MAX_BYTES = 4096  # WeCom rejects markdown content longer than 4096 bytes


def wecom_body(note: Note) -> dict[str, Any]:
    content = note.text.markdown
    if len(content.encode()) > MAX_BYTES:
        content = content.encode()[: MAX_BYTES - 8].decode(errors="ignore") + "\n……"
    return {"msgtype": "markdown", "markdown": {"content": content}}


@dataclass(slots=True)
class WeComChannel:
    url: str
    client: httpx.AsyncClient
    name: str = "wecom"

    async def send(self, note: Note) -> None:
        response = await post_json(
            self.client, self.url, wecom_body(note), headers={DEDUP_HEADER: note.dedup_key}
        )
        check_errcode(self.url, response, rate_limited=RATE_LIMITED)
