"""The distributor's nftables ruleset: a pure function from the VIP and the serving amphorae'
slots to the script that spreads new connections over them.

Every amphora behind a distributor has a *slot* ``s`` (1 and up): packets carrying firewall
mark ``s`` are routed to it (the distributor's routing table ``ROUTE_TABLE_BASE + s``). The
ruleset, in table ``ip fulcrum_distributor``, chain ``prerouting`` (mangle priority, before
the routing decision):

1. A new TCP or UDP connection to the VIP arriving on the network interface whose conntrack
   mark is still 0 gets ``ct mark`` = the slot chosen by ``jhash`` of its 5-tuple modulo the
   number of serving amphorae, through an anonymous map ``index -> slot``. Nothing is marked
   when no amphora serves.
2. Every packet of the original direction to the VIP gets ``meta mark`` = its connection's
   ``ct mark``, so policy routing by fwmark keeps an established connection on its amphora
   whatever the serving set has become since it was opened.

Replies (the other direction) are not marked: they leave by the main table toward the client.
The script flushes and refills the chain in one ``nft -f`` transaction: the kernel switches
from the old rule set to the new one atomically.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

__all__ = ["NFT_TABLE", "ROUTE_TABLE_BASE", "distribution_ruleset"]

NFT_TABLE: Final = "fulcrum_distributor"
ROUTE_TABLE_BASE: Final = 100


def distribution_ruleset(vip: str, interface: str, serving_slots: Sequence[int], seed: int) -> str:
    """The ``nft -f`` script for ``vip`` (IPv4) arriving on ``interface``, new connections
    spread over ``serving_slots`` (in this order, each once) with jhash ``seed``."""
    address = ipaddress.IPv4Address(vip)
    if len(set(serving_slots)) != len(serving_slots) or any(s < 1 for s in serving_slots):
        raise ValueError(f"slots must be distinct and positive: {list(serving_slots)}")
    match = f'iifname "{interface}" ip daddr {address}'
    lines = [
        f"table ip {NFT_TABLE} {{",
        "  chain prerouting {",
        "    type filter hook prerouting priority mangle; policy accept;",
        "  }",
        "}",
        f"flush chain ip {NFT_TABLE} prerouting",
    ]
    if serving_slots:
        choices = ", ".join(f"{index} : {slot}" for index, slot in enumerate(serving_slots))
        lines.append(
            f"add rule ip {NFT_TABLE} prerouting {match} meta l4proto {{ tcp, udp }} "
            f"ct state new ct mark 0 ct mark set jhash ip saddr . th sport . ip daddr . "
            f"th dport . meta l4proto mod {len(serving_slots)} seed {seed:#x} "
            f"map {{ {choices} }}"
        )
    lines.append(
        f"add rule ip {NFT_TABLE} prerouting {match} ct direction original meta mark set ct mark"
    )
    return "\n".join(lines) + "\n"
