"""Generic webhook: a JSON POST of the transition with its Chinese text and dedup key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from connectors.notify import DEDUP_HEADER, Note, header_value
from connectors.notify.http import post_json


def webhook_body(note: Note) -> dict[str, Any]:
    return {
        "dedup_key": note.dedup_key,
        "recipient": note.recipient,
        "title": note.text.title,
        "text": note.text.plain,
        "markdown": note.text.markdown,
        "transition": dict(note.transition),
    }


@dataclass(slots=True)
class WebhookChannel:
    url: str
    client: httpx.AsyncClient
    name: str = "webhook"

    async def send(self, note: Note) -> None:
        key = header_value(note.dedup_key)  # the body's dedup_key stays as it is
        await post_json(
            self.client, self.url, webhook_body(note), headers={DEDUP_HEADER: key, "Idempotency-Key": key}
        )
