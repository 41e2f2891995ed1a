"""Placement of amphorae on hosts: the least-loaded live host, anti-affinity between the
amphorae of one load balancer, and each host's share of a network's addresses.

Pure: a function of the hosts' liveness and loads, the hosts of the amphora's peers (the other
amphorae of its ACTIVE_STANDBY LB) and the policy. Rules, in order:

1. only live hosts are candidates; with none, placement is refused;
2. hosts holding none of the peers come first, and of those the least loaded wins (ties: the
   first in the settings' order);
3. when every live host holds a peer: ``soft`` anti-affinity (the default) takes the least
   loaded of them and says the placement is degraded; ``hard`` (Octavia's anti-affinity
   server group) refuses.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

Policy = Literal["soft", "hard"]


@dataclass(frozen=True, slots=True)
class HostLoad:
    """A host as the scheduler sees it: whether it is reachable and how many amphorae it runs."""

    name: str
    live: bool
    amphorae: int


@dataclass(frozen=True, slots=True)
class Placement:
    """The chosen host (None: refused, ``reason`` says why); ``degraded`` when it shares a
    host with a peer."""

    host: str | None
    degraded: bool = False
    reason: str = ""


def place(hosts: Sequence[HostLoad], peers: Collection[str], policy: Policy) -> Placement:
    """Where a new amphora goes; ``peers`` are the hosts of its LB's other amphorae."""
    live = [h for h in hosts if h.live]
    if not live:
        return Placement(None, reason="no live amphora host")
    apart = [h for h in live if h.name not in peers]
    if apart:
        return Placement(_least_loaded(apart).name)
    if policy == "hard":
        held = ", ".join(sorted(set(peers)))
        return Placement(None, reason=f"anti-affinity: every live host holds a peer ({held})")
    return Placement(_least_loaded(live).name, degraded=True)


def _least_loaded(hosts: Sequence[HostLoad]) -> HostLoad:
    return min(enumerate(hosts), key=lambda item: (item[1].amphorae, item[0]))[1]


def address_share(ip_range: str, hosts: int, index: int) -> str:
    """Host ``index``'s share of ``ip_range`` among ``hosts`` hosts: the range split into the
    next power of two of equal blocks, block ``index`` (so no two hosts hand out one address)."""
    if not 0 <= index < hosts:
        raise ValueError(f"host index {index} outside 0..{hosts - 1}")
    network = ipaddress.ip_network(ip_range)
    bits = math.ceil(math.log2(hosts)) if hosts > 1 else 0
    if network.prefixlen + bits > network.max_prefixlen - 2:
        raise ValueError(f"{ip_range} is too small to share among {hosts} hosts")
    return str(list(network.subnets(prefixlen_diff=bits))[index])
