"""Notification text (pure) and the channels' wire formats (no network)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import urllib.parse
from typing import Any

import httpx
import pytest

from alerts.notification_text import compose_notification, figure_lines
from connectors.notify import DEDUP_HEADER, DeliveryError, Note, header_value
from connectors.notify.dingtalk import DingTalkChannel, dingtalk_body, sign, signed_url
from connectors.notify.smtp import SmtpSettings, build_message, message_id
from connectors.notify.webhook import WebhookChannel, webhook_body
from connectors.notify.wecom import MAX_BYTES, WeComChannel, wecom_body
from tests.builders import alert_transition

NOW = dt.datetime(2025, 7, 1, 9, 30, tzinfo=dt.UTC)


def transition(**over: Any) -> dict[str, Any]:
    return alert_transition(**over)


def note(t: dict[str, Any] | None = None, key: str = "k1") -> Note:
    t = t or transition()
    return Note(key, t, compose_notification(t, reference=key), NOW, "D101")


# -- text ------------------------------------------------------------------


def test_new_alert_text_has_the_figures_and_the_action() -> None:
    text = compose_notification(transition(), reference="KEY-1")
    assert text.title == "【新预警·严重预警】预算执行率偏低：教育局 校舍改造"
    for body in (text.markdown, text.plain):
        assert "教育局（D101）" in body
        assert "项目 校舍改造（P1）" in body
        assert "预算金额：100.00万元" in body
        assert "已支付：10.00万元" in body
        assert "预算执行率：10.00%" in body
        assert "执行进度要求：30.00%" in body
        assert "建议措施" in body and "整改措施" in body
        assert "2025:low_execution:project:P1" in body
        assert "KEY-1" in body
    # a figure that is equal to another, absent, or belongs to another rule is left out
    assert "计划进度" not in text.plain
    assert "绩效目标完成率" not in text.plain
    assert "连续未支付天数" not in text.plain


def test_a_disposition_step_says_its_figures_are_from_the_last_evaluation() -> None:
    """An overdue escalation on 07-15 carries the figures of the alert's evaluation on
    06-30; printed under 业务日期 07-15 without a word they read as that day's."""
    overdue = compose_notification(transition(transition="disposition_overdue", date="2025-07-15"))
    fresh = compose_notification(transition())
    for body in (overdue.markdown, overdue.plain):
        assert "关键数据（2025-06-30 预警评估时）" in body
    assert "预警评估时" not in fresh.plain and "关键数据：" in fresh.plain


def test_the_answers_deadline_is_a_date_in_the_notification() -> None:
    """"在10个工作日内" alone, in a notification delivered months after the alert fired, said
    nothing of a deadline long past (text audit H5)."""
    pending = {"status": "pending", "deadline": "2025-07-14", "escalate_on": "2025-07-15", "working_days": 10}
    fresh = compose_notification(transition(disposition=pending))
    for body in (fresh.markdown, fresh.plain):
        assert "处置期限" in body and "2025-07-14（逾期未处置的，2025-07-15起升级报财政局）" in body
    overdue = compose_notification(transition(transition="disposition_overdue", date="2025-07-15",
                                              disposition={**pending, "status": "overdue"}))
    assert "处置期限：2025-07-14（已逾期，已升级报财政局）" in overdue.plain
    answered = compose_notification(transition(disposition={**pending, "status": "disposed"}))
    resolved = compose_notification(transition(transition="resolved", disposition=pending))
    assert "处置期限" not in answered.plain and "处置期限" not in resolved.plain
    assert "处置期限" not in compose_notification(transition()).plain  # none kept: nothing said


def test_the_fallback_contact_is_told_to_pass_it_on() -> None:
    text = compose_notification(transition(), audience="default")
    assert text.title.startswith("【代转：该单位未配置通知渠道】【新预警·严重预警】")


def test_severity_change_names_both_severities() -> None:
    t = transition(rule="behind_schedule", transition="escalated", previous_severity="warning")
    text = compose_notification(t)
    assert text.title.startswith("【预警升级·严重预警】执行进度滞后")
    assert "一般预警 → 严重预警" in text.plain
    assert "预警起始：2025-06-30" in text.plain


def test_resolved_text() -> None:
    t = transition(
        transition="resolved",
        status="resolved",
        date="2025-07-05",
        previous_severity="critical",
        message="【预警解除】预算执行率偏低：校舍改造的预警已于2025-07-05解除，当前预算执行率70.00%。",
        action="预警条件已消除，无需进一步处理；请继续按计划执行。",
        figures={"budget": "1000000.00", "paid": "700000.00", "execution_rate": 0.7},
    )
    text = compose_notification(t)
    assert text.title == "【预警解除】预算执行率偏低：教育局 校舍改造"
    assert "处理建议：预警条件已消除" in text.plain
    assert "预算执行率：70.00%" in text.plain
    # the title says 【预警解除】预算执行率偏低 once; the situation goes straight to the facts
    assert "情况说明：校舍改造的预警已于2025-07-05解除" in text.plain
    assert "**情况说明**：校舍改造的预警已于" in text.markdown


def test_a_figure_is_listed_only_for_the_rule_it_belongs_to() -> None:
    t = transition(rule="behind_schedule", figures={"execution_rate": 0.1, "floor": 0.3, "days_without_payment": 9})
    labels = [label for label, _ in figure_lines(t)]
    assert "执行进度要求" not in labels and "连续未支付天数" not in labels and "预算执行率" in labels
    assert "执行进度要求" in [label for label, _ in figure_lines(transition(figures={"floor": 0.3}))]


def test_escalation_copy_is_marked_and_stalled_shows_days() -> None:
    t = transition(rule="stalled", severity="warning")
    text = compose_notification(t, audience="escalation")
    assert text.title.startswith("【抄送财政局】【新预警·一般预警】长期未支付")
    assert ("连续未支付天数", "147天") in figure_lines(t)


def test_department_alert_names_the_department_once() -> None:
    t = transition(
        subject_type="department",
        subject_id="D101",
        subject_name="教育局",
        rule="department_low_execution",
        severity="warning",
        figures={"execution_rate": 0.1, "projects": 3},
    )
    text = compose_notification(t)
    assert text.title == "【新预警·一般预警】部门预算执行率偏低：教育局"
    assert "部门 教育局（D101）" in text.plain
    assert "项目个数：3个" in text.plain


# -- DingTalk ----------------------------------------------------------------


def test_dingtalk_signature_known_value() -> None:
    # HMAC-SHA256(key=secret, "timestamp\nsecret"), base64, url-encoded
    assert (
        sign(1700000000000, "SEC0123456789abcdef")
        == "TSZbRFUuvaSQaRKUpF970OPCb2%2FLcQAP3wOvwZIzBZk%3D"
    )


def test_dingtalk_signature_matches_the_documented_scheme() -> None:
    secret, ts = "SECabc+/=", 1751362200000
    expected = base64.b64encode(
        hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest()
    ).decode()
    url = signed_url("https://oapi.dingtalk.com/robot/send?access_token=T", secret, ts)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["access_token"] == ["T"]
    assert query["timestamp"] == [str(ts)]
    assert query["sign"] == [expected]
    assert signed_url("https://x/robot", None, ts) == "https://x/robot"


def test_dingtalk_sends_signed_markdown_and_fails_on_errcode() -> None:
    seen: list[httpx.Request] = []
    answers = iter(
        [{"errcode": 0, "errmsg": "ok"}, {"errcode": 310000, "errmsg": "sign not match"}]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=next(answers))

    async def go() -> DeliveryError:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            channel = DingTalkChannel(
                "https://ding.example/robot/send?access_token=T", "SECx", client
            )
            await channel.send(note())
            with pytest.raises(DeliveryError) as err:
                await channel.send(note())
            return err.value

    error = asyncio.run(go())
    assert not error.transient and "310000" in str(error)
    query = urllib.parse.parse_qs(seen[0].url.query.decode())
    assert query["timestamp"] == [str(int(NOW.timestamp() * 1000))]
    assert query["sign"] == [urllib.parse.unquote_plus(sign(int(NOW.timestamp() * 1000), "SECx"))]
    body = json.loads(seen[0].content)
    assert body == dingtalk_body(note())
    assert body["msgtype"] == "markdown" and "预算执行率偏低" in body["markdown"]["title"]
    assert seen[0].headers[DEDUP_HEADER] == "k1"


# -- WeCom, webhook ------------------------------------------------------------


def test_wecom_markdown_payload_and_size_limit() -> None:
    body = wecom_body(note())
    assert body["msgtype"] == "markdown"
    assert "### 【新预警·严重预警】" in body["markdown"]["content"]
    long = transition(message="很长的说明" * 1000)
    content = wecom_body(note(long))["markdown"]["content"]
    assert len(content.encode()) <= MAX_BYTES
    # the long situation gives way, not the action and the alert id after it (cut at the end)
    assert "内容过长已截断" in content and "建议措施" in content
    assert content.rstrip().endswith("2025:low_execution:project:P1；通知编号：k1")


def test_http_errors_map_to_transient_or_permanent() -> None:
    statuses = iter([503, 429, 404])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(statuses), text="nope")

    async def go() -> list[bool]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            found = []
            for _ in range(3):
                try:
                    await WeComChannel("https://wecom.example/send?key=K", client).send(note())
                except DeliveryError as err:
                    assert "key=K" not in str(err)  # the token is not printed
                    found.append(err.transient)
            return found

    assert asyncio.run(go()) == [True, True, False]


def test_webhook_body_and_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport) as client:
            await WebhookChannel("https://hooks.example/budget", client).send(
                note(key="abc|webhook")
            )

    asyncio.run(go())
    body = json.loads(seen[0].content)
    assert body == json.loads(json.dumps(webhook_body(note(key="abc|webhook"))))
    assert body["dedup_key"] == "abc|webhook"
    assert body["transition"]["rule"] == "low_execution"
    assert seen[0].headers["Idempotency-Key"] == "abc|webhook"


# -- email -----------------------------------------------------------------------


def test_email_message_is_utf8_chinese_with_a_stable_message_id() -> None:
    smtp = SmtpSettings(host="mail.example", sender="bw@czj.example.gov.cn")
    message = build_message(note(key="K|email"), ["a@x.example", "b@x.example"], smtp)
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "【新预警·严重预警】预算执行率偏低：教育局 校舍改造"
    assert parsed["To"] == "a@x.example, b@x.example"
    assert "预算执行监控" in str(parsed["From"])
    assert parsed["Message-ID"] == message_id("K|email", "czj.example.gov.cn")
    assert parsed[DEDUP_HEADER] == "K|email"
    body = parsed.get_body().get_content()  # type: ignore[union-attr]
    assert "预算执行率：10.00%" in body
    assert b"\xe9\xa2\x84" not in message.as_bytes().split(b"\n\n", 1)[0]  # headers are encoded


def test_names_do_not_format_a_robots_markdown() -> None:
    t = transition(subject_name="道路*维修*_二期_[链接](http://x)")
    text = compose_notification(t)
    assert "道路＊维修＊＿二期＿［链接］(http://x)" in text.markdown
    assert "道路*维修*_二期_[链接](http://x)" in text.plain  # mail is plain text: as typed


def test_a_years_close_is_named_as_such_not_as_a_lifted_warning() -> None:
    t = transition(
        transition="resolved", status="resolved", reason="year_closed", date="2026-01-31",
        previous_severity="critical",
        message="【年度结束】预算执行率偏低：教育局「校舍改造」（P1）的预警至2025年度结束仍未解除，随年度关闭；年末预算执行率为10.00%。",
    )
    text = compose_notification(t)
    assert text.title == "【年度结束】预算执行率偏低：教育局 校舍改造"
    assert "变动类型：年度结束" in text.plain and "预警解除" not in text.plain
    assert "情况说明：教育局「校舍改造」（P1）的预警至2025年度结束仍未解除" in text.plain


@pytest.mark.parametrize(
    "key",
    [
        "2025:low_execution:project:P1|firing|2025-06-30|D101|webhook",
        "2026:stalled:project:自然资源-2026-01|firing|2026-07-01|自然资源局|wecom",
        "2025:stalled:project:P 100%|firing|2025-06-30|D\r\n1|email",
    ],
)
def test_a_dedup_header_is_ascii_and_gives_the_key_back(key: str) -> None:
    value = header_value(key)
    assert value.isascii() and value.isprintable() and urllib.parse.unquote(value) == key
    if key.isascii() and key.isprintable() and "%" not in key:
        assert value == key  # receivers that dedup on the header see what they saw before
    httpx.Request("POST", "http://127.0.0.1/", headers={DEDUP_HEADER: value})  # encodable
