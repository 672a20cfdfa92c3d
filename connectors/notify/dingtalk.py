"""DingTalk group robot (钉钉自定义机器人), markdown message, 加签 (signed secret).

Signature: ``timestamp`` in milliseconds; ``sign`` = urlencode(base64(
HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}"))); both go in the query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from connectors.notify import DEDUP_HEADER, Note, header_value
from connectors.notify.http import check_errcode, post_json

# 130101: sending too fast (20 messages a minute per robot) — worth retrying.
RATE_LIMITED = frozenset({130101})


def sign(timestamp_ms: int, secret: str) -> str:
    """The url-encoded ``sign`` parameter for ``timestamp_ms``."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    return urllib.parse.quote_plus(base64.b64encode(digest))


def signed_url(url: str, secret: str | None, timestamp_ms: int) -> str:
    if not secret:
        return url
    separator = "&" if urllib.parse.urlsplit(url).query else "?"
    return f"{url}{separator}timestamp={timestamp_ms}&sign={sign(timestamp_ms, secret)}"


def dingtalk_body(note: Note) -> dict[str, Any]:
    return {
        "msgtype": "markdown",
        "markdown": {"title": note.text.title, "text": note.text.markdown},
    }


@dataclass(slots=True)
class DingTalkChannel:
    url: str
    secret: str | None
    client: httpx.AsyncClient
    name: str = "dingtalk"

    async def send(self, note: Note) -> None:
        timestamp = int(note.now.timestamp() * 1000)
        url = signed_url(self.url, self.secret, timestamp)
        response = await post_json(
            self.client, url, dingtalk_body(note), headers={DEDUP_HEADER: header_value(note.dedup_key)}
        )
        check_errcode(self.url, response, rate_limited=RATE_LIMITED)
