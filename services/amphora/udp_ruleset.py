"""The nftables ruleset of the amphora's UDP listeners: pure functions of a ``UdpConfig``.

One table, ``inet fulcrum_udp``. Each listener has a map ``slots_<n>`` of ``SLOTS`` entries,
slot -> member address . port, and DNAT rules in the ``prerouting`` nat chain that give each new
flow (conntrack's first packet) a slot in the packet mark and translate it through the map:

- ROUND_ROBIN (and LEAST_CONNECTIONS, served alike): ``numgen inc mod SLOTS``;
- SOURCE_IP: ``jhash`` of the source address; SOURCE_IP_PORT: of address and port;
- SOURCE_IP persistence (``persistence_timeout``): a dynamic map ``persist_<n>`` remembers the
  slot given to each client (address masked by ``persistence_granularity``) for that many
  seconds after its last new flow; a client keeps its slot, so its member while that member
  stays in the map.

Replies come back through the amphora: ``postrouting`` masquerades DNATed UDP flows. Weights
are slot counts: members share the slots in proportion to their weights, and a member that goes
down or away frees only its own slots (``assign_slots``), so other clients keep their member. A
listener without a member in service has an empty map: nothing matches and its datagrams get the
amphora's ICMP port unreachable. Only the map elements change when members go up or down
(``elements``); the table is replaced (``ruleset``) when listeners change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Final

from libs.common.agent_contract import UdpAlgorithm, UdpConfig, UdpListener

TABLE: Final = "fulcrum_udp"
FAMILY: Final = "inet"
SLOTS: Final = 1024

# listener id -> the member id of each slot ("" for none), SLOTS long or empty.
SlotTable = list[str]


def _ip(listener: UdpListener) -> str:
    """nft's address keyword of the listener's family."""
    return "ip6" if ipaddress.ip_address(listener.addresses[0]).version == 6 else "ip"


def map_name(kind: str, index: int) -> str:
    return f"{kind}_{index}"


def _source_key(listener: UdpListener) -> str:
    ip = _ip(listener)
    granularity = listener.persistence_granularity
    if granularity is None:
        return f"{ip} saddr"
    full = ipaddress.ip_address(granularity).max_prefixlen
    mask = ipaddress.ip_network(f"{granularity}/{full}").network_address
    if int(mask) == (1 << full) - 1:
        return f"{ip} saddr"
    return f"{ip} saddr & {mask}"


def _selector(listener: UdpListener) -> str:
    ip = _ip(listener)
    match listener.algorithm:
        case UdpAlgorithm.SOURCE_IP:
            return f"jhash {ip} saddr mod {SLOTS}"
        case UdpAlgorithm.SOURCE_IP_PORT:
            return f"jhash {ip} saddr . udp sport mod {SLOTS}"
        case _:
            return f"numgen inc mod {SLOTS}"


def _listener_rules(listener: UdpListener, index: int) -> list[str]:
    ip = _ip(listener)
    vips = ", ".join(listener.addresses)
    match = f"{ip} daddr {{ {vips} }} udp dport {listener.port}"
    slots = f"@{map_name('slots', index)}"
    if listener.persistence_timeout is None:
        return [f"{match} meta mark set {_selector(listener)} dnat {ip} to meta mark map {slots}"]
    key, persist = _source_key(listener), f"@{map_name('persist', index)}"
    timeout = listener.persistence_timeout
    return [
        f"{match} {key} != {persist} add {persist} {{ {key} : {_selector(listener)} }}",
        f"{match} meta mark set {key} map {persist}",
        f"{match} update {persist} {{ {key} timeout {timeout}s : meta mark }}",
        f"{match} dnat {ip} to meta mark map {slots}",
    ]


def ruleset(config: UdpConfig) -> str:
    """The whole table, replacing any previous one in one transaction; its maps are empty
    (``elements`` fills them). An empty config removes the table."""
    lines = [f"table {FAMILY} {TABLE} {{}}", f"delete table {FAMILY} {TABLE}"]
    if not config.listeners:
        return "\n".join(lines) + "\n"
    lines.append(f"table {FAMILY} {TABLE} {{")
    for index, listener in enumerate(config.listeners):
        ip = _ip(listener)
        lines += [
            f"  map {map_name('slots', index)} {{",
            f"    typeof meta mark : {ip} daddr . udp dport",
            "  }",
        ]
        if listener.persistence_timeout is not None:
            lines += [
                f"  map {map_name('persist', index)} {{",
                f"    typeof {ip} saddr : meta mark",
                "    flags dynamic,timeout",
                f"    timeout {listener.persistence_timeout}s",
                "  }",
            ]
    lines += [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
    ]
    for index, listener in enumerate(config.listeners):
        lines += [f"    {rule}" for rule in _listener_rules(listener, index)]
    lines += [
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        "    meta l4proto udp ct status dnat masquerade",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def assign_slots(previous: Sequence[str], weights: Mapping[str, int]) -> SlotTable:
    """Slots shared by the members in service (id -> weight > 0) in proportion to weight.

    A member keeps the slots it had in ``previous`` up to its share (an evenly spread subset
    when it had more); the slots of members gone (or above their share) go round those below
    theirs, so only the clients of a member that left move and consecutive slots keep
    alternating between members. Deterministic: ties go to the first member in ``weights``."""
    members = [m for m, w in weights.items() if w > 0]
    if not members:
        return []
    total = sum(weights[m] for m in members)
    share = {m: SLOTS * weights[m] // total for m in members}
    for m in members[: SLOTS - sum(share.values())]:
        share[m] += 1
    table: SlotTable = [""] * SLOTS
    held = dict.fromkeys(members, 0)
    if len(previous) == SLOTS:
        owned: dict[str, list[int]] = {m: [] for m in members}
        for slot, member in enumerate(previous):
            if member in owned:
                owned[member].append(slot)
        for member, slots in owned.items():
            # Above its share: keep slots spread evenly, so consecutive flows still alternate.
            keep = min(len(slots), share[member])
            for i in range(keep):
                table[slots[i * len(slots) // keep]] = member
            held[member] = keep
    # Each free slot goes to the member furthest from its share (smooth weighted order).
    short = [m for m in members if held[m] < share[m]]
    for slot in range(SLOTS):
        if table[slot]:
            continue
        member = max(short, key=lambda m: (share[m] - held[m]) / share[m])
        table[slot] = member
        held[member] += 1
    return table


def elements(
    config: UdpConfig, tables: Mapping[str, SlotTable], endpoints: Mapping[str, str]
) -> str:
    """The nft script that sets every listener's slot map to ``tables[listener.id]``;
    ``endpoints`` maps member id -> "address . port" as nft writes it."""
    lines = []
    for index, listener in enumerate(config.listeners):
        name = map_name("slots", index)
        lines.append(f"flush map {FAMILY} {TABLE} {name}")
        table = tables.get(listener.id, [])
        entries = [f"{slot} : {endpoints[m]}" for slot, m in enumerate(table) if m]
        for start in range(0, len(entries), 256):
            chunk = ", ".join(entries[start : start + 256])
            lines.append(f"add element {FAMILY} {TABLE} {name} {{ {chunk} }}")
    return "\n".join(lines) + "\n" if lines else ""


def endpoint(address: str, port: int) -> str:
    """A member as an element value of a slot map."""
    return f"{address} . {port}"
