"""Brute-force guard of password authentication: failed attempts counted per user and per
source address in a sliding window shared by every API replica.

Once a user (or an address) has ``limit`` failures within ``window`` seconds, further password
attempts for it are refused (429 with ``Retry-After``) before the password is even checked,
until the oldest of those failures leaves the window. A successful login clears its user's
failures (not its address's). The failures live in a ``FailureLog`` every replica shares
(``services/api/adapters/login_failures.py``: Postgres), so N replicas allow the attempts of
one; the log keeps one-way digests of the scopes, never the names typed (a mistyped user name
is often a password).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ThrottleLimits:
    per_user: int = 5
    per_address: int = 20
    window: float = 300.0


class FailureLog(Protocol):
    """Failed password attempts by scope (a digest), timed by one clock for every replica."""

    async def recent(
        self, scopes: Sequence[bytes], window: float, most: int
    ) -> Mapping[bytes, Sequence[float]]:
        """The ages in seconds, newest first, of at most ``most`` failures per scope within
        the last ``window`` seconds; a scope without any is absent."""
        ...

    async def record(self, scopes: Sequence[bytes], window: float) -> None:
        """One failure now for each of ``scopes``; failures older than ``window`` may go."""
        ...

    async def clear(self, scope: bytes) -> None:
        """Forget every failure of ``scope``."""
        ...


def seconds_to_wait(ages: Sequence[float], limit: int, window: float) -> int:
    """Whole seconds until one more attempt is allowed, given the ages (newest first) of the
    failures within ``window``; 0 while fewer than ``limit``."""
    if len(ages) < limit:
        return 0
    return max(1, math.ceil(window - ages[limit - 1]))


def user_scope(user: str) -> bytes:
    return hashlib.sha256(b"user\x00" + user.encode("utf-8", "surrogatepass")).digest()


def address_scope(address: str) -> bytes:
    return hashlib.sha256(b"address\x00" + address.encode("utf-8", "surrogatepass")).digest()


class LoginThrottle:
    """Per-user and per-address failure windows of password authentication over a shared
    ``FailureLog``."""

    def __init__(self, limits: ThrottleLimits, log: FailureLog) -> None:
        self._limits = limits
        self._log = log

    async def retry_after(self, user: str, address: str) -> int:
        """Seconds the caller must wait before trying ``user`` from ``address``; 0: go on."""
        limits = self._limits
        by_user, by_address = user_scope(user), address_scope(address)
        ages = await self._log.recent(
            (by_user, by_address), limits.window, max(limits.per_user, limits.per_address)
        )
        return max(
            seconds_to_wait(ages.get(by_user, ()), limits.per_user, limits.window),
            seconds_to_wait(ages.get(by_address, ()), limits.per_address, limits.window),
        )

    async def failed(self, user: str, address: str) -> None:
        await self._log.record((user_scope(user), address_scope(address)), self._limits.window)

    async def succeeded(self, user: str) -> None:
        await self._log.clear(user_scope(user))
