"""The brute-force guard's windows: per user, per address, Retry-After, success clears."""

from __future__ import annotations

from services.api.auth.throttle import FailureWindow, LoginThrottle, ThrottleLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_user_is_refused_after_its_limit_until_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(ThrottleLimits(per_user=3, per_address=100, window=60), clock)
    for step in range(3):
        assert throttle.retry_after("alice", f"127.0.0.{step}") == 0
        throttle.failed("alice", f"127.0.0.{step}")
        clock.now += 10
    # Now is 1030; the first failure (at 1000) leaves the window at 1060.
    assert throttle.retry_after("alice", "127.0.0.9") == 30
    assert throttle.retry_after("bob", "127.0.0.9") == 0  # another user: not throttled
    clock.now += 30
    assert throttle.retry_after("alice", "127.0.0.9") == 0


def test_an_address_is_refused_whichever_user_it_tries() -> None:
    clock = Clock()
    throttle = LoginThrottle(ThrottleLimits(per_user=100, per_address=2, window=60), clock)
    throttle.failed("alice", "127.0.0.1")
    throttle.failed("bob", "127.0.0.1")
    assert throttle.retry_after("carol", "127.0.0.1") == 60
    assert throttle.retry_after("carol", "127.0.0.2") == 0


def test_success_clears_the_users_failures_not_the_addresss() -> None:
    clock = Clock()
    throttle = LoginThrottle(ThrottleLimits(per_user=2, per_address=2, window=60), clock)
    throttle.failed("alice", "127.0.0.1")
    throttle.succeeded("alice")
    throttle.failed("alice", "127.0.0.2")
    assert throttle.retry_after("alice", "127.0.0.3") == 0
    throttle.failed("bob", "127.0.0.1")
    assert throttle.retry_after("carol", "127.0.0.1") > 0


def test_memory_stays_bounded() -> None:
    clock = Clock()
    window = FailureWindow(limit=3, window=60, clock=clock, max_keys=10)
    for n in range(100):
        window.fail(f"user-{n}")
        window.fail(f"user-{n}")
    assert len(window._failures) <= 10
    assert window.retry_after("user-99") == 0  # 2 failures, under the limit
