"""Verdicts of the driver reconciliation: what runs unowned, what the store expects but is gone.

Pure: a function of what the driver lists, what the store holds, which amphora hosts the
driver can see now and when each unowned amphora was first seen unowned. An amphora on a host
the driver cannot see is never judged: an unreachable host is not a missing amphora (its
amphorae stop beating, and the health service fails them over). The handler confirms each
verdict under a lock before acting on it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from libs.common.domain.amphora import AmphoraStatus


@dataclass(frozen=True, slots=True)
class InventoryRow:
    """One amphora as the store knows it, with its LB's provisioning status (if any)."""

    amphora_id: str
    status: str
    lb_id: str | None
    lb_status: str | None
    host: str = ""


def unowned(row: InventoryRow | None) -> bool:
    """Nobody owns a running amphora the store never recorded or recorded as deleted."""
    return row is None or row.status == AmphoraStatus.DELETED


@dataclass(frozen=True)
class DriverVerdicts:
    """``unowned_since``: every unowned amphora, with when it was first seen so; ``reap``:
    those unowned for the grace period; ``missing``: LB amphorae of ACTIVE LBs that do not
    run; ``missing_spares``: READY spares that do not run."""

    unowned_since: dict[str, float]
    reap: tuple[str, ...]
    missing: tuple[InventoryRow, ...]
    missing_spares: tuple[InventoryRow, ...]


def judge_driver(
    running: Collection[str],
    leftovers: Collection[str],
    inventory: Mapping[str, InventoryRow],
    unowned_since: Mapping[str, float],
    now: float,
    grace: float,
    visible_hosts: Collection[str] | None = None,
) -> DriverVerdicts:
    """Compare the driver (``running`` amphorae and ``leftovers`` of others) with the store;
    ``visible_hosts``: the amphora hosts it sees now (None: a single driver, sees all)."""
    present = set(running) | set(leftovers)
    since = {a: unowned_since.get(a, now) for a in present if unowned(inventory.get(a))}
    reap = tuple(a for a in sorted(since) if now - since[a] >= grace)
    missing = []
    missing_spares = []
    for row in inventory.values():
        if row.amphora_id in running or not sees(visible_hosts, row.host):
            continue
        if row.status == AmphoraStatus.ALLOCATED and row.lb_status == "ACTIVE":
            missing.append(row)
        elif row.status == AmphoraStatus.READY and row.lb_id is None:
            missing_spares.append(row)
    return DriverVerdicts(since, reap, tuple(missing), tuple(missing_spares))


def sees(visible_hosts: Collection[str] | None, host: str) -> bool:
    """Whether an amphora on ``host`` can be judged (None: a single driver sees everything)."""
    return visible_hosts is None or host in visible_hosts
