import datetime as dt

import orjson
import pytest

from budget.events import EventRejected, parse_event, parse_event_object, record_to_json_dict
from budget.fast_events import fast_record
from tests import builders as b


def test_every_contract_type_validates_and_round_trips() -> None:
    events = [
        b.registered("P1", plan=[i / 12 for i in range(1, 13)]),
        b.approved("P1", "1500000.00"),
        b.adjusted("P1", "-200000", on="2025-06-01"),
        b.payment("P1", "1000.50", on="2025-03-01"),
        b.reversal("P1", "0.50", on="2025-03-02"),
        b.indicator("P1", "I1", 100, direction="lower_better"),
        b.report("P1", "I1", 80.5, on="2025-03-31"),
        b.report("P1", "I1", True, on="2025-04-30"),
    ]
    for event in events:
        record = parse_event(orjson.dumps(event)).to_record()
        assert record.type == event["type"]
        again = record_to_json_dict(record)
        assert parse_event_object(again).to_record() == record


def test_money_is_int_fen_and_dates_are_ordinals() -> None:
    record = b.record(b.payment("P1", "1000.50", on="2025-03-01", event_id="E1"))
    assert record.amount == 100050
    assert record.day == dt.date(2025, 3, 1).toordinal()


def test_a_full_iso_datetime_is_accepted_as_its_date() -> None:
    event = b.payment("P1", "1", on="2025-03-01T23:10:00+08:00")
    assert parse_event_object(event).occurred_on == dt.date(2025, 3, 1)


@pytest.mark.parametrize(
    ("moment", "date"),
    [
        ("2025-12-31T17:30:00Z", dt.date(2026, 1, 1)),  # the same moment as the next line
        ("2026-01-01T01:30:00+08:00", dt.date(2026, 1, 1)),
        ("2025-12-31T15:59:59+00:00", dt.date(2025, 12, 31)),
        ("2025-12-31T23:59:59", dt.date(2025, 12, 31)),  # no offset: China time already
        ("2025-06-30T20:00:00-04:00", dt.date(2025, 7, 1)),
    ],
)
def test_a_datetime_with_an_offset_falls_on_its_date_in_china(moment: str, date: dt.date) -> None:
    assert parse_event_object(b.payment("P1", "1", on=moment)).occurred_on == date
    assert parse_event(orjson.dumps(b.payment("P1", "1", on=moment))).to_record().day == date.toordinal()
    fast = fast_record(orjson.dumps(b.payment("P1", "1", on=moment)))
    assert fast is not None and fast.day == date.toordinal()


def test_unknown_fields_are_ignored() -> None:
    event = {**b.payment("P1", "1", on="2025-03-01"), "voucher_note": "x"}
    assert parse_event_object(event).to_record().amount == 100


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"event_id": "x"}', "missing field 'type'"),
        (b'{"type": "grant", "event_id": "x"}', "unknown event type 'grant'"),
        (b'{"type": "payment", "event_id": "x", "occurred_on": "2025-03-01", "amount": "1"}',
         "missing field 'project_id'"),
        (b'{"type": "payment", "event_id": "x", "occurred_on": "2025-02-30", "project_id": "P", "amount": "1"}',
         "occurred_on"),
        (b'{"type": "payment", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P", "amount": "0"}',
         "greater than 0"),
        (b'{"type": "payment", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P", "amount": "-3"}',
         "greater than 0"),
        (b'{"type": "payment_reversed", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P",'
         b' "amount": "0"}', "greater than 0"),
        (b'{"type": "payment", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P", "amount": "1.005"}',
         "whole number of fen"),
        (b'{"type": "budget_approved", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P",'
         b' "amount": "-1"}', "greater than or equal to 0"),
        (b'{"type": "payment", "event_id": "", "occurred_on": "2025-03-01", "project_id": "P", "amount": "1"}',
         "event_id"),
        (b'{"type": "payment", "event_id": "x", "occurred_on": "1850-03-01", "project_id": "P", "amount": "1"}',
         "outside"),
        (b'{"type": "indicator_reported", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P"}',
         "missing field"),
        (b'{"type": "indicator_defined", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P",'
         b' "indicator_id": "I", "name": "n", "target": 1, "weight": 0}', "weight"),
        # infinite (1e400 parses as infinity) or absurd weights: stored as null, one stopped every run
        (b'{"type": "indicator_defined", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P",'
         b' "indicator_id": "I", "name": "n", "target": 1, "weight": 1e400}', "weight: Input should be a finite"),
        (b'{"type": "indicator_defined", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P",'
         b' "indicator_id": "I", "name": "n", "target": 1, "weight": NaN}', "weight"),
        (b'{"type": "indicator_defined", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P",'
         b' "indicator_id": "I", "name": "n", "target": 1, "weight": 1e308}', "less than or equal to 10000"),
        (b'{"type": "indicator_defined", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P",'
         b' "indicator_id": "I", "name": "n", "target": -1e400}', "target"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EventRejected) as caught:
        parse_event(raw)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("plan", "reason"),
    [([0.1] * 11, "12 monthly"), ([0.5, 0.4] + [1.0] * 10, "cumulative"), ([1.2] * 12, "outside 0-1")],
)
def test_spending_plans_must_be_twelve_cumulative_fractions(plan: list[float], reason: str) -> None:
    with pytest.raises(EventRejected) as caught:
        parse_event_object(b.registered("P1", plan=plan))
    assert reason in caught.value.reason


def test_fund_source_must_be_one_of_the_four_budgets() -> None:
    with pytest.raises(EventRejected) as caught:
        parse_event_object(b.registered("P1", fund_source="lottery"))
    assert "fund_source" in caught.value.reason


@pytest.mark.parametrize(
    ("event", "chinese", "english"),
    [
        ({"type": "payment", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P", "amount": "0"},
         "amount：应大于 0", "amount: Input should be greater than 0"),
        ({"type": "payment", "event_id": "x", "occurred_on": "2025-02-30", "project_id": "P", "amount": "1"},
         "occurred_on：不是有效日期", "is not a date"),
        ({"type": "payment", "event_id": "x", "occurred_on": "2025-03-01", "amount": "1"},
         "缺少字段 'project_id'", "missing field 'project_id'"),
        ({"type": "payment", "event_id": "x", "occurred_on": "2025-03-01", "project_id": "P", "amount": "1.005"},
         "amount：金额最多保留两位小数", "whole number of fen"),
        ({"type": "project_registered", "event_id": "x", "occurred_on": "2025-02-03", "project_id": "P",
          "fiscal_year": 2025, "name": "n", "department_id": "D", "department_name": "d", "fund_source": "彩票"},
         "fund_source：取值应为 'general'、'government_fund'、'state_capital'、'social_insurance' 之一",
         "一般公共预算"),
        ({"type": "grant", "event_id": "x"}, "未知的事件类型 'grant'", "unknown event type 'grant'"),
    ],
)
def test_a_reason_is_said_in_chinese_first_with_the_english_kept(
    event: dict[str, object], chinese: str, english: str
) -> None:
    """Dead-letter reasons are read by finance offices (user-facing text is Chinese); the
    English stays in brackets for logs, searches and support."""
    with pytest.raises(EventRejected) as refused:
        parse_event(orjson.dumps(event))
    reason = refused.value.reason
    assert reason.startswith(chinese) and english in reason
