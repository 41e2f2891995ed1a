"""Brute-force guard of password authentication: failed attempts counted per user and per
source address in a sliding window.

Once a user (or an address) has ``limit`` failures within ``window`` seconds, further password
attempts for it are refused (429 with ``Retry-After``) before the password is even checked,
until the oldest failure leaves the window. A successful login clears its user's failures (not
its address's). Counts live in this process: each API replica guards its own share of the
traffic, and the memory is bounded (``max_keys``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottleLimits:
    per_user: int = 5
    per_address: int = 20
    window: float = 300.0


class FailureWindow:
    """Failure times per key within ``window`` seconds."""

    def __init__(
        self,
        limit: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again; 0 when it may now."""
        now = self._clock()
        times = self._recent(key, now)
        if times is None or len(times) < self._limit:
            return 0
        return max(1, math.ceil(times[-self._limit] + self._window - now))

    def fail(self, key: str) -> None:
        now = self._clock()
        if key not in self._failures and len(self._failures) >= self._max_keys:
            self._prune(now)
        times = self._recent(key, now) or self._failures.setdefault(key, deque())
        times.append(now)
        while len(times) > self._limit:
            times.popleft()

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def _prune(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= self._max_keys:  # all recent: forget the oldest keys
            del self._failures[next(iter(self._failures))]


class LoginThrottle:
    """Per-user and per-address failure windows of password authentication."""

    def __init__(self, limits: ThrottleLimits, clock: Callable[[], float] = time.monotonic):
        self._users = FailureWindow(limits.per_user, limits.window, clock)
        self._addresses = FailureWindow(limits.per_address, limits.window, clock)

    def retry_after(self, user: str, address: str) -> int:
        """Seconds the caller must wait before trying ``user`` from ``address``; 0: go on."""
        return max(self._users.retry_after(user), self._addresses.retry_after(address))

    def failed(self, user: str, address: str) -> None:
        self._users.fail(user)
        self._addresses.fail(address)

    def succeeded(self, user: str) -> None:
        self._users.clear(user)
