"""The brute-force guard's pure parts: the sliding window's arithmetic and the scopes' digests
(the shared counts in Postgres: tests/integration/api/test_login_throttle.py)."""

from __future__ import annotations

from services.api.auth.throttle import address_scope, seconds_to_wait, user_scope


def test_under_the_limit_nobody_waits() -> None:
    assert seconds_to_wait([], limit=3, window=60) == 0
    assert seconds_to_wait([5.0, 20.0], limit=3, window=60) == 0


def test_at_the_limit_the_wait_ends_when_the_limit_th_newest_failure_leaves_the_window() -> None:
    # Failures 0, 10 and 30 s ago: the third newest (30 s) leaves a 60 s window in 30 s.
    assert seconds_to_wait([0.0, 10.0, 30.0], limit=3, window=60) == 30
    # Older failures beyond the limit do not lengthen the wait.
    assert seconds_to_wait([0.0, 10.0, 30.0, 50.0], limit=3, window=60) == 30
    # Partial seconds round up, and a caller about to be let in still waits one second.
    assert seconds_to_wait([0.0, 10.0, 30.4], limit=3, window=60) == 30
    assert seconds_to_wait([0.0, 59.9, 59.95], limit=3, window=60) == 1


def test_scopes_are_digests_that_keep_users_and_addresses_apart() -> None:
    assert user_scope("default/alice") == user_scope("default/alice")
    assert user_scope("default/alice") != user_scope("default/bob")
    assert user_scope("127.0.0.1") != address_scope("127.0.0.1")
    assert len(user_scope("x" * 100_000)) == 32  # any name, fixed size, never the name itself
    assert b"alice" not in user_scope("default/alice")
    assert len(user_scope("\udcff")) == 32  # a lone surrogate from a JSON body is no 500
