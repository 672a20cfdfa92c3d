"""Board sessions and the login throttle (streams.auth), on an injected clock."""

from __future__ import annotations

from streams.auth import LoginThrottle, Sessions


def test_logging_in_again_ends_the_old_session_and_expired_ones_are_swept() -> None:
    now = [0.0]
    sessions = Sessions(seconds=100, clock=lambda: now[0])
    first, _ = sessions.create("jxk")
    stale, _ = sessions.create("jyj")
    second, _ = sessions.create("jxk", replacing=first)
    assert sessions.get(first) is None and sessions.get(second) is not None
    now[0] = 150
    third, _ = sessions.create("wjw")
    assert sessions._by_id.keys() == {third}  # the expired ones went with this login
    assert sessions.get(stale) is None


def test_the_throttle_waits_after_the_free_failures_and_doubles() -> None:
    now = [0.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(4):
        assert throttle.wait("login:a") == 0
        throttle.failed("login:a")
    assert throttle.wait("login:a") == 0  # four wrong ones: the fifth try is still free
    throttle.failed("login:a")
    assert throttle.wait("login:a") == 30  # after five, the sixth waits 30 s (README)
    now[0] = 31
    throttle.failed("login:a")
    assert throttle.wait("login:a") == 60
    for _ in range(19):
        throttle.failed("address:1.2.3.4")
    assert throttle.wait("address:1.2.3.4") == 0  # an address has twenty
    throttle.failed("address:1.2.3.4")
    assert throttle.wait("login:b", "address:1.2.3.4") == 30
    throttle.succeeded("login:a")
    assert throttle.wait("login:a") == 0
