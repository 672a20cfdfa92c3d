"""Shared HTTP POST for the channels: maps httpx outcomes to DeliveryError."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from connectors.notify import DeliveryError


def redact(url: str) -> str:
    """The URL without its query (robot tokens and signatures live there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


async def post_json(
    client: httpx.AsyncClient, url: str, body: Any, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    try:
        response = await client.post(url, json=body, headers=headers)
    except httpx.TimeoutException as err:
        raise DeliveryError(
            f"{redact(url)}: 请求超时（{type(err).__name__}）", transient=True, retry_now=False
        ) from None
    except httpx.TransportError as err:
        raise DeliveryError(
            f"{redact(url)}: 无法连接（{err or type(err).__name__}）", transient=True
        ) from None
    if response.status_code == 429:
        wait = _retry_after(response.headers.get("Retry-After"))
        raise DeliveryError(
            f"{redact(url)}: HTTP 429 请求过于频繁{f'，对方要求 {wait:g} 秒后重试' if wait else ''}",
            transient=True, rate_limited=True, retry_after=wait,
        )
    if response.status_code >= 500:
        raise DeliveryError(
            f"{redact(url)}: HTTP {response.status_code} {response.text[:200]}", transient=True
        )
    if 300 <= response.status_code < 400:
        # Not followed: the message did not arrive, and a redirect must not carry a
        # department's warnings to an address nobody configured.
        moved = redact(response.headers.get("Location", "")) or "（未给出新地址）"
        raise DeliveryError(
            f"{redact(url)}: HTTP {response.status_code}，接收方要求改投 {moved}，消息未送达；"
            "请在部门目录中更新地址",
            transient=False,
        )
    if response.status_code >= 400 or response.status_code < 200:
        raise DeliveryError(
            f"{redact(url)}: HTTP {response.status_code} {response.text[:200]}；"
            "请检查部门目录中的地址和密钥",
            transient=False,
        )
    return response


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is left to the backoff)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def check_errcode(url: str, response: httpx.Response, *, rate_limited: frozenset[int]) -> None:
    """DingTalk and WeCom answer HTTP 200 with ``errcode`` != 0 on failure."""
    try:
        data = response.json()
    except ValueError:
        raise DeliveryError(
            f"{redact(url)}: 应答不是 JSON：{response.text[:200]}", transient=True
        ) from None
    code = data.get("errcode", 0) if isinstance(data, dict) else 0
    if code:
        message = data.get("errmsg", "") if isinstance(data, dict) else ""
        limited = int(code) in rate_limited
        raise DeliveryError(
            f"{redact(url)}: errcode={code} {message}", transient=limited, rate_limited=limited
        )
