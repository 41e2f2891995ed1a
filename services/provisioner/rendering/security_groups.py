"""The pure renderer of a load balancer's VIP security groups as an nftables ruleset.

``render_sg_ruleset(vips, rules)`` is the whole table ``inet fulcrum_sg`` of one amphora,
replaced atomically (the text first declares the table, deletes it and declares it again, so
one ``nft -f`` swaps old for new). Traffic to a VIP (every VIP of the LB) is filtered in
``prerouting`` before any DNAT, so HAProxy's listeners and kernel-served UDP listeners alike
see only what the groups let in:

- replies of connections already accepted pass (``ct state established,related``), as do
  the IPv6 neighbour discovery messages a VIP needs to be reachable at all (Neutron allows
  them on every port);
- each ingress rule of the groups (their union) accepts its ethertype, protocol, port range
  (ICMP: type and code) and ``remote_ip_prefix``;
- everything else to a VIP is dropped.

Rules with a ``remote_group_id`` match sources that are ports of that group; Fulcrum has no
ports but the VIPs, so such rules accept nothing. Egress rules are not enforced (the VIP port
answers only what it accepted). ``rules`` None renders the removal of the table: no groups, no
filter.

Protocols are matched by number: nft resolves names through ``/etc/protocols``, which a
minimal amphora image may lack.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from libs.common.domain.security_group import protocol_number
from libs.common.events.security_group import SecurityGroupRule

TABLE: Final = "fulcrum_sg"
FAMILY: Final = "inet"
# Before DNAT (-100) so UDP listeners are filtered on the VIP, after conntrack (-200).
PRIORITY: Final = -150
_PORT_PROTOCOLS: Final = {6: "tcp", 17: "udp", 33: "dccp", 132: "sctp"}


def _family_match(ethertype: str) -> tuple[str, str]:
    """(nfproto match, address keyword) of an ethertype."""
    return ("meta nfproto ipv6", "ip6") if ethertype == "IPv6" else ("meta nfproto ipv4", "ip")


def render_rule(rule: SecurityGroupRule) -> str | None:
    """One accept statement for an ingress rule; None when it can match nothing here."""
    if rule.direction != "ingress" or rule.remote_group_id is not None:
        return None
    nfproto, address = _family_match(rule.ethertype)
    parts = [nfproto]
    if rule.remote_ip_prefix is not None:
        network = ipaddress.ip_network(rule.remote_ip_prefix, strict=False)
        if network.prefixlen:
            parts.append(f"{address} saddr {network}")
    number = protocol_number(rule.protocol)
    low, high = rule.port_range_min, rule.port_range_max
    if number in _PORT_PROTOCOLS:
        name = _PORT_PROTOCOLS[number]
        parts.append(f"meta l4proto {number}")
        if low is not None:
            ports = str(low) if high is None or high == low else f"{low}-{high}"
            parts.append(f"{name} dport {ports}")
    elif number in (1, 58):
        icmp = "icmpv6" if rule.ethertype == "IPv6" else "icmp"
        parts.append(f"meta l4proto {number}")
        if low is not None:
            parts.append(f"{icmp} type {low}")
            if high is not None:
                parts.append(f"{icmp} code {high}")
    elif number is not None:
        parts.append(f"meta l4proto {number}")
    return " ".join([*parts, "accept"])


def _elements(addresses: Iterable[str]) -> str:
    return ", ".join(sorted(set(addresses)))


def render_sg_ruleset(vips: Sequence[str], rules: Sequence[SecurityGroupRule] | None) -> str:
    """The nft script that makes table ``inet fulcrum_sg`` filter traffic to ``vips`` by the
    ingress ``rules`` (None: remove the table). Pure; deterministic for equal inputs."""
    header = f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
    if rules is None:
        return header
    v4 = [a for a in vips if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in vips if ipaddress.ip_address(a).version == 6]
    accepts = sorted({text for r in rules if (text := render_rule(r)) is not None})
    lines = [f"table {FAMILY} {TABLE} {{"]
    lines.append("  chain vip_ingress {")
    lines.append("    ct state established,related accept")
    lines.append(
        "    meta nfproto ipv6 meta l4proto 58 icmpv6 type "
        "{ nd-neighbor-solicit, nd-neighbor-advert } accept"
    )
    lines.extend(f"    {text}" for text in accepts)
    lines.append("    drop")
    lines.append("  }")
    lines.append("  chain prerouting {")
    lines.append(f"    type filter hook prerouting priority {PRIORITY}; policy accept;")
    if v4:
        lines.append(f"    ip daddr {{ {_elements(v4)} }} jump vip_ingress")
    if v6:
        lines.append(f"    ip6 daddr {{ {_elements(v6)} }} jump vip_ingress")
    lines.append("  }")
    lines.append("}")
    return header + "\n".join(lines) + "\n"
