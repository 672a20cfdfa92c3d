"""Build the channel objects of one contact from the directory."""

from __future__ import annotations

import httpx

from connectors.directory import Contact
from connectors.notify import Channel
from connectors.notify.dingtalk import DingTalkChannel
from connectors.notify.smtp import EmailChannel, SendMail, SmtpSettings
from connectors.notify.webhook import WebhookChannel
from connectors.notify.wecom import WeComChannel


def channel_for(
    contact: Contact,
    name: str,
    *,
    client: httpx.AsyncClient,
    smtp: SmtpSettings | None,
    send_mail: SendMail | None = None,
) -> Channel | None:
    """The contact's channel ``name``, or None when the contact has no such channel."""
    if name == "webhook" and contact.webhook:
        return WebhookChannel(contact.webhook, client)
    if name == "dingtalk" and contact.dingtalk:
        return DingTalkChannel(contact.dingtalk.url, contact.dingtalk.secret, client)
    if name == "wecom" and contact.wecom:
        return WeComChannel(contact.wecom, client)
    if name == "email" and contact.email:
        if send_mail is None:
            return EmailChannel(contact.email, smtp)
        return EmailChannel(contact.email, smtp, send_mail)
    return None
