"""The spare pool's plan: how many spares to ask for, which to retire, which died.

Pure. A spare counts towards the pool while BOOTING or READY. A READY spare that was heard
from and then fell silent is dead (``fail``); a BOOTING spare that never came up is retired;
both are replaced. When the pool is larger than wanted, the oldest READY spares are retired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spare:
    amphora_id: str
    status: str  # BOOTING | READY
    age: float  # seconds since it was requested (or booted)
    silent_for: float | None  # seconds since its last heartbeat; None: never heard


@dataclass(frozen=True)
class SparePlan:
    """``request`` new spares; ``retire`` and ``fail`` list ``(amphora_id, reason)``."""

    request: int
    retire: tuple[tuple[str, str], ...] = ()
    fail: tuple[tuple[str, str], ...] = ()


def plan_spares(
    spares: Sequence[Spare], size: int, *, boot_timeout: float, heartbeat_timeout: float
) -> SparePlan:
    """The changes that bring the pool to ``size`` live spares.

    ``heartbeat_timeout`` 0 never judges a spare by its heartbeats (no health service).
    """
    fail = [
        (s.amphora_id, f"spare silent for {s.silent_for:.0f} s")
        for s in spares
        if s.status == "READY"
        and heartbeat_timeout > 0
        and s.silent_for is not None
        and s.silent_for > heartbeat_timeout
    ]
    stuck = [
        (s.amphora_id, f"spare not booted after {s.age:.0f} s")
        for s in spares
        if s.status == "BOOTING" and s.age > boot_timeout
    ]
    gone = {amphora_id for amphora_id, _ in fail + stuck}
    live = [s for s in spares if s.amphora_id not in gone]
    surplus = [s for s in live if s.status == "READY"][: max(0, len(live) - size)]
    retire = stuck + [(s.amphora_id, f"surplus: the pool is {size}") for s in surplus]
    return SparePlan(request=max(0, size - len(live)), retire=tuple(retire), fail=tuple(fail))
