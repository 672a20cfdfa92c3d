"""The robots' rate limit: at most 20 messages in any 62 seconds, per robot address."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connectors.directory import parse_directory
from connectors.notify.pacing import ROBOT_LIMITS, RateLimit, Window, recipients_of, robot_of

LIMIT = RateLimit(20, 62.0, refused_for=600.0)


def test_the_twenty_first_message_of_a_minute_waits_for_the_first_to_age_out() -> None:
    window = Window(LIMIT)
    assert all(window.take(float(t)) for t in range(20))
    assert not window.take(19.5)
    assert window.free_at(19.5) == 62.0  # the first went at 0
    assert not window.take(61.9)
    assert window.take(62.0)
    assert not window.take(62.5)  # the second (at 1) is still inside the window
    assert window.take(63.0)


def test_a_window_seeded_after_a_restart_remembers_the_last_minute() -> None:
    window = Window.seeded(LIMIT, [30.0 - i for i in range(20)])
    assert not window.take(40.0)
    assert window.free_at(40.0) == 11.0 + 62.0


@given(st.lists(st.floats(min_value=0, max_value=600, allow_nan=False), max_size=200))
def test_no_62_seconds_ever_hold_more_than_20_sends(attempts: list[float]) -> None:
    window = Window(LIMIT)
    sent = [t for t in sorted(attempts) if window.take(t)]
    for i, start in enumerate(sent):
        inside = [t for t in sent[i:] if t < start + LIMIT.seconds]
        assert len(inside) <= LIMIT.count


def test_a_robot_shared_by_several_recipients_is_one_robot() -> None:
    shared = "https://oapi.dingtalk.com/robot/send?access_token=SHARED"
    directory = parse_directory({
        "default": {"name": "财政局", "dingtalk": {"url": shared}},
        "departments": {
            "D1": {"name": "教育局", "dingtalk": {"url": shared, "secret": "SEC1"}},
            "D2": {"name": "卫健委", "dingtalk": {"url": "https://oapi.dingtalk.com/robot/send?access_token=D2"}},
            "D3": {"name": "民政局", "wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"},
        },
    })
    assert sorted(recipients_of(directory, "dingtalk", shared)) == ["D1", "default"]
    assert robot_of(directory.contact("D3"), "wecom") == "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"
    assert robot_of(directory.contact("D3"), "dingtalk") is None
    assert robot_of(directory.contact("D1"), "webhook") is None  # a plain webhook is not paced
    assert set(ROBOT_LIMITS) == {"dingtalk", "wecom"}


def test_a_robot_that_said_too_fast_gets_nothing_while_it_refuses() -> None:
    window = Window(LIMIT)
    assert window.take(0.0)
    window.refused(10.0)  # someone else fills the robot's minute
    assert window.free_at(11.0) == 610.0
    assert not window.take(609.0)
    assert window.take(610.0)
