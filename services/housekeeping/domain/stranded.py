"""Stranded work: when a load balancer's PENDING_* is re-driven, and when it is given up.

Pure. The pending period starts with the first change after the LB last settled (activated,
changes applied, or failed); operating-status reports and re-drive requests are not changes.
Each attempt (the original one, then every re-drive) gets ``after`` seconds; once ``redrives``
re-drives have had theirs, the LB goes ERROR with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from libs.common.domain.model import PENDING_STATUSES, LoadBalancerState
from libs.common.events import Envelope
from libs.common.events import housekeeping as hk
from libs.common.events import loadbalancer as ev
from libs.common.events import loadbalancer_status as status_ev

_NOT_A_CHANGE: Final = (status_ev.OperatingStatusChanged, hk.LoadBalancerRedriveRequested)


@dataclass(frozen=True)
class PendingPeriod:
    status: str
    since: datetime
    redrives: int
    last_redrive: datetime | None


@dataclass(frozen=True)
class Verdict:
    action: Literal["wait", "redrive", "fail"]
    attempt: int = 0
    pending_seconds: float = 0.0
    reason: str = ""


def pending_period(state: LoadBalancerState, envelopes: Sequence[Envelope]) -> PendingPeriod | None:
    """The LB's current pending period (None when it is not PENDING_*)."""
    lb = state.loadbalancer
    if lb is None or lb.provisioning_status not in PENDING_STATUSES or not envelopes:
        return None
    start = 0
    for index in range(len(envelopes) - 1, -1, -1):
        if isinstance(envelopes[index].payload, ev.SETTLING):
            start = index + 1
            break
    period = envelopes[start:]
    changes = [e for e in period if not isinstance(e.payload, _NOT_A_CHANGE)]
    redrives = [e for e in period if isinstance(e.payload, hk.LoadBalancerRedriveRequested)]
    return PendingPeriod(
        status=lb.provisioning_status.value,
        since=(changes or period or envelopes[-1:])[0].occurred_at,
        redrives=len(redrives),
        last_redrive=redrives[-1].occurred_at if redrives else None,
    )


def judge(period: PendingPeriod, now: datetime, *, after: float, redrives: int) -> Verdict:
    """Wait, re-drive (attempt N), or fail: each attempt gets ``after`` seconds."""
    pending = (now - period.since).total_seconds()
    latest = period.last_redrive or period.since
    if (now - latest).total_seconds() < after:
        return Verdict("wait", pending_seconds=pending)
    if period.redrives < redrives:
        return Verdict("redrive", attempt=period.redrives + 1, pending_seconds=pending)
    return Verdict(
        "fail",
        attempt=period.redrives,
        pending_seconds=pending,
        reason=(
            f"stranded in {period.status} for {pending:.0f} s after {period.redrives} attempts"
        ),
    )
