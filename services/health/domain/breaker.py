"""Which silent amphorae to fail over: the stale rule and the failover circuit breaker.

An amphora is *stale* when silent past ``heartbeat_timeout``, or, never heard at all, when it
was booted longer than ``heartbeat_timeout + stale_grace`` ago (Octavia never fails those over;
Fulcrum does). The breaker counts every amphora silent past half the timeout, not only the stale
ones: amphorae cut off at one instant go stale over one heartbeat interval, and counting the
late ones too keeps a mass outage from being failed over piecemeal before the count is reached.
With ``threshold`` > 0 and that count at or above it, no amphora is failed over: the stale ones
are marked stopped, and a heartbeat releases them. Pure module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from libs.common.domain.model import ProvisioningStatus

# Load balancers that accept a failover; others are skipped until they settle (Octavia too).
FAILOVER_STATUSES: Final = frozenset({ProvisioningStatus.ACTIVE, ProvisioningStatus.ERROR})


@dataclass(frozen=True, slots=True)
class SilentAmphora:
    """An ALLOCATED amphora not heard from lately; ``silent_for`` is None if never heard."""

    amphora_id: str
    lb_id: str | None
    silent_for: float | None
    age: float
    stopped: bool
    lb_status: str | None


@dataclass(frozen=True, slots=True)
class ScanDecision:
    fail: tuple[SilentAmphora, ...]
    stop: tuple[SilentAmphora, ...]
    stale: int
    late: int
    tripped: bool


def suspect_after(heartbeat_timeout: float) -> float:
    """Silence after which an amphora counts towards the breaker (half the timeout)."""
    return heartbeat_timeout / 2


def is_stale(amp: SilentAmphora, heartbeat_timeout: float, stale_grace: float) -> bool:
    if amp.silent_for is None:
        return amp.age > heartbeat_timeout + stale_grace
    return amp.silent_for > heartbeat_timeout


def decide_failovers(
    silent: list[SilentAmphora],
    *,
    heartbeat_timeout: float,
    stale_grace: float,
    threshold: int,
) -> ScanDecision:
    """Split the silent amphorae into those to fail now and those to hold as stopped.

    ``silent`` may hold amphorae that are only late (silent past ``suspect_after``); they count
    for the breaker but are never failed over. Stale amphorae whose LB is PENDING_* (or gone)
    wait for a later scan.
    """
    stale = [a for a in silent if is_stale(a, heartbeat_timeout, stale_grace)]
    tripped = threshold > 0 and len(silent) >= threshold
    if tripped:
        return ScanDecision((), tuple(stale), len(stale), len(silent), True)
    fail = tuple(
        a
        for a in stale
        if a.lb_id is not None and a.lb_status in {s.value for s in FAILOVER_STATUSES}
    )
    return ScanDecision(fail, (), len(stale), len(silent), False)
