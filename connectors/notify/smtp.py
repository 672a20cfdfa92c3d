"""Email over SMTP (aiosmtplib): Chinese subject and body, UTF-8.

Message-ID is derived from the dedup key, so a resent notification carries the
same Message-ID and mail systems (and people) can recognise the duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

import aiosmtplib

from connectors.notify import DEDUP_HEADER, DeliveryError, Note

SendMail = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 25
    sender: str = "budgetwatch@localhost"
    sender_name: str = "预算执行监控"
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    tls: bool = False
    timeout: float = 30.0


def message_id(dedup_key: str, domain: str) -> str:
    return f"<{hashlib.sha256(dedup_key.encode()).hexdigest()[:32]}@{domain}>"


def build_message(note: Note, recipients: Sequence[str], smtp: SmtpSettings) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((smtp.sender_name, smtp.sender), charset="utf-8")
    message["To"] = ", ".join(recipients)
    message["Subject"] = note.text.title
    message["Date"] = format_datetime(note.now)
    domain = smtp.sender.rpartition("@")[2] or "budgetwatch"
    message["Message-ID"] = message_id(note.dedup_key, domain)
    message[DEDUP_HEADER] = note.dedup_key
    message.set_content(note.text.plain, charset="utf-8")
    return message


@dataclass(slots=True)
class EmailChannel:
    recipients: tuple[str, ...]
    smtp: SmtpSettings | None
    send_mail: SendMail = aiosmtplib.send
    name: str = "email"

    async def send(self, note: Note) -> None:
        if self.smtp is None:
            raise DeliveryError(
                "未配置 SMTP 服务器：请设置 BUDGETWATCH_SMTP_HOST（及端口、发件人）后重试",
                transient=False,
            )
        smtp = self.smtp
        message = build_message(note, self.recipients, smtp)
        try:
            answer = await self.send_mail(
                message,
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password,
                start_tls=smtp.starttls,
                use_tls=smtp.tls,
                timeout=smtp.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as err:
            raise DeliveryError(
                f"SMTP {smtp.host}:{smtp.port} 拒收收件人：{err}", transient=False
            ) from None
        except aiosmtplib.SMTPAuthenticationError as err:
            raise DeliveryError(
                f"SMTP {smtp.host}:{smtp.port} 认证失败：{err}；"
                "请检查 BUDGETWATCH_SMTP_USER/PASSWORD",
                transient=False,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as err:
            raise DeliveryError(
                f"SMTP {smtp.host}:{smtp.port} 发送失败：{err or type(err).__name__}",
                transient=True,
            ) from None
        refused = answer[0] if isinstance(answer, tuple) and answer and isinstance(answer[0], dict) else {}
        if refused:
            # The server took the message for the others: aiosmtplib raises only when every
            # address is refused, so this was recorded as delivered to all.
            listed = "；".join(f"{address}（{getattr(r, 'code', '')} {getattr(r, 'message', r)}）"
                              for address, r in refused.items())
            others = [a for a in self.recipients if a not in refused]
            raise DeliveryError(
                f"SMTP {smtp.host}:{smtp.port} 拒收部分收件人：{listed}；已送达：{'、'.join(others) or '无'}。"
                "请核对部门目录中的邮箱地址；修正后 `budgetwatch outbox --retry-failed` 会重发给全部收件人"
                "（同一 Message-ID）",
                transient=False,
                final=True,
            )
