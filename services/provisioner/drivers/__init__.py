"""Amphora drivers: one protocol, several ways to run an amphora (process, netns, docker).

Drivers are idempotent by natural key (the amphora id): ``ensure`` returns the running amphora
when it already exists, ``delete`` of a missing one succeeds, and ``list`` tells reconciliation
what really runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class AmphoraSpec:
    """What to run: an amphora for ``lb_id`` (None for a spare) serving ``vip_address``."""

    amphora_id: str
    lb_id: str | None
    vip_address: str | None = None
    role: str = "STANDALONE"
    topology: str = "SINGLE"
    labels: dict[str, str] = field(default_factory=dict)
    # Hosts of the LB's other amphorae (anti-affinity; see domain/placement.py).
    peer_hosts: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AmphoraHandle:
    """A running amphora as its driver sees it."""

    amphora_id: str
    lb_id: str | None
    driver: str
    compute_id: str
    agent_url: str
    lb_network_ip: str
    cert_expiration: str | None = None
    role: str = "STANDALONE"
    # Its IPv6 address on a dual-stack VIP network (VRRP of IPv6 primary VIPs), else None.
    lb_network_ip6: str | None = None
    # The amphora host it runs on (drivers/hosts.py); "" for a driver used alone.
    host: str = ""


# Reconciliation's view of the leftovers: amphora id -> the LB its files or labels name (None:
# none, or not readable). A build in flight (its container created, its agent not listening
# yet) is a leftover too: reconciliation deletes one only under that LB's work lock.
Leftovers = Mapping[str, str | None]


class AmphoraDriver(Protocol):
    """Runs amphorae. ``prepare`` is awaited once before the first call, ``close`` once
    after the last; amphorae keep running across ``close`` (a restarted provisioner finds
    them through ``list``)."""

    name: str

    async def prepare(self) -> None:
        """Start what makes the first boot fast (a zygote, say); failures are logged."""
        ...

    async def close(self) -> None:
        """Release the driver's own resources (connections, helper processes)."""
        ...

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        """Start the amphora unless it runs already; raises InfrastructureError."""
        ...

    async def delete(self, amphora_id: str) -> None:
        """Stop and remove it; succeeds when it is already gone."""
        ...

    async def list(self) -> list[AmphoraHandle]:
        """Every amphora this driver runs now."""
        ...

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        """The amphora if this driver runs it now (as ``list`` would show it), else None; at
        most the cost of ``list``, much less where the driver can look one up."""
        ...

    async def leftovers(self) -> Sequence[str]:
        """Ids of amphorae that do not run but left something behind (a stopped container, a
        state dir, a namespace); ``delete`` removes it."""
        ...

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        """``list`` and ``leftovers`` at once (reconciliation's look: one walk where the
        driver finds both in one), each leftover with the LB its files or labels name."""
        ...

    async def reachable_hosts(self) -> set[str] | None:
        """The amphora hosts it can see now; None for a driver of one host (it sees all it
        runs). Reconciliation judges only amphorae on hosts it sees."""
        ...


class Distribution(Protocol):
    """Spreads the VIP of ACTIVE_ACTIVE load balancers over their amphorae (a driver's
    distributor, one per LB, made with its first amphora). Amphorae are named by id; every
    method is idempotent: adding one already added, or removing one not there, does nothing.
    Established connections stay on their amphora whatever the set becomes."""

    async def add(self, lb_id: str, vip: str, amphora_id: str) -> None:
        """Wire the running amphora behind the LB's distributor (the VIP on it, no traffic)."""
        ...

    async def serve(self, lb_id: str, vip: str, amphora_id: str) -> None:
        """New connections may go to the (added) amphora."""
        ...

    async def drain(self, lb_id: str, vip: str, amphora_id: str) -> None:
        """No new connection goes to the amphora; its established ones stay."""
        ...

    async def remove(self, lb_id: str, amphora_id: str) -> None:
        """Unwire the amphora: only the connections it held fail."""
        ...

    async def delete(self, lb_id: str) -> None:
        """Remove the LB's distributor (the VIP stops answering); absent is fine."""
        ...

    async def connections(self, lb_id: str, amphora_id: str) -> int:
        """The established connections the distributor holds to the amphora (0: none, or
        not behind it)."""
        ...

    def serving(self, lb_id: str) -> tuple[str, ...]:
        """The amphorae new connections go to (as far as this process knows)."""
        ...
