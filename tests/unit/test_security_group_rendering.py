"""The pure parts of security groups: the nft ruleset of a load balancer's VIP filter, the
agent's confinement of rulesets to its table, the group fold and Neutron's rule validation."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from libs.common.domain.security_group import fold
from libs.common.errors import ValidationFailed
from libs.common.events import security_group as ev
from libs.common.events.security_group import SecurityGroupRule
from services.amphora.adapters.nftables import Nftables
from services.amphora.adapters.security_groups import VipSecurityGroups
from services.api.domain import security_groups as sg
from services.provisioner.rendering.security_groups import render_rule, render_sg_ruleset

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def rule(**fields: Any) -> SecurityGroupRule:
    base: dict[str, Any] = {
        "id": "r",
        "security_group_id": "g",
        "project_id": "p",
        "direction": "ingress",
        "ethertype": "IPv4",
        "created_at": "2026-12-06T08:00:00Z",
    }
    return SecurityGroupRule(**{**base, **fields})


def test_rules_render_to_accept_statements() -> None:
    assert render_rule(rule()) == "meta nfproto ipv4 accept"
    assert (
        render_rule(
            rule(
                protocol="tcp",
                port_range_min=80,
                port_range_max=81,
                remote_ip_prefix="198.18.1.0/24",
            )
        )
        == "meta nfproto ipv4 ip saddr 198.18.1.0/24 meta l4proto 6 tcp dport 80-81 accept"
    )
    assert (
        render_rule(rule(protocol="udp", port_range_min=53, port_range_max=53))
        == "meta nfproto ipv4 meta l4proto 17 udp dport 53 accept"
    )
    assert (
        render_rule(rule(protocol="icmp", port_range_min=8, port_range_max=0))
        == "meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code 0 accept"
    )
    assert (
        render_rule(rule(ethertype="IPv6", protocol="ipv6-icmp", remote_ip_prefix="fd00::/64"))
        == "meta nfproto ipv6 ip6 saddr fd00::/64 meta l4proto 58 accept"
    )
    assert render_rule(rule(protocol="47")) == "meta nfproto ipv4 meta l4proto 47 accept"
    # A host-bit prefix is matched by its network; an any-address prefix matches every source.
    assert "ip saddr 198.18.1.0/24" in (render_rule(rule(remote_ip_prefix="198.18.1.9/24")) or "")
    assert render_rule(rule(remote_ip_prefix="0.0.0.0/0")) == "meta nfproto ipv4 accept"
    # Numbers only: a minimal image may lack /etc/protocols, which names need.
    for protocol in ("tcp", "udp", "sctp", "dccp", "icmp", "gre", "vrrp", "ipv6-icmp"):
        ethertype = "IPv6" if protocol == "ipv6-icmp" else "IPv4"
        text = render_rule(rule(protocol=protocol, ethertype=ethertype)) or ""
        assert all(p.isdigit() for p in re.findall(r"l4proto (\S+)", text)), text
    assert render_rule(rule(direction="egress")) is None
    assert render_rule(rule(remote_group_id="other")) is None


def test_the_ruleset_replaces_the_table_and_drops_the_rest_to_every_vip() -> None:
    text = render_sg_ruleset(
        ["198.18.9.200", "fd00::5"], [rule(protocol="tcp", port_range_min=80, port_range_max=80)]
    )
    lines = text.splitlines()
    assert lines[:3] == [
        "table inet fulcrum_sg",
        "delete table inet fulcrum_sg",
        "table inet fulcrum_sg {",
    ]
    assert "    type filter hook prerouting priority -150; policy accept;" in lines
    assert "    ip daddr { 198.18.9.200 } jump vip_ingress" in lines
    assert "    ip6 daddr { fd00::5 } jump vip_ingress" in lines
    accept = "    meta nfproto ipv4 meta l4proto 6 tcp dport 80 accept"
    assert lines.index("    ct state established,related accept") < lines.index(accept)
    assert lines.index(accept) < lines.index("    drop")
    # Deterministic, rules deduplicated; no groups at all: the table goes.
    again = render_sg_ruleset(["198.18.9.200", "fd00::5"], [rule(), rule(id="x"), rule()])
    assert again.count("meta nfproto ipv4 accept") == 1
    assert render_sg_ruleset(["198.18.9.200"], None) == (
        "table inet fulcrum_sg\ndelete table inet fulcrum_sg\n"
    )


async def test_the_agent_applies_only_its_own_table() -> None:
    applied: list[str] = []

    class Recorder(Nftables):
        async def apply(self, ruleset: str) -> None:
            applied.append(ruleset)

    nft = Recorder(binary=Path("/nonexistent"))
    groups = VipSecurityGroups(nft)
    text = render_sg_ruleset(["198.18.9.200"], [rule()])
    await groups.apply(text)
    assert applied == [text]
    for foreign in (
        "table inet fulcrum_udp\ndelete table inet fulcrum_udp\n",
        "flush ruleset\n",
        text + "table ip nat {\n}\n",
    ):
        with pytest.raises(ValidationFailed):
            await groups.apply(foreign)
    assert applied == [text]


def test_the_group_fold_follows_its_events() -> None:
    defaults = sg.default_rules("g", "p", NOW)
    added = rule(id="r1", protocol="tcp", port_range_min=22, port_range_max=22)
    state = fold(
        [
            ev.SecurityGroupCreated(
                id="g", project_id="p", name="n", created_at="t0", rules=defaults
            ),
            ev.SecurityGroupRuleAdded(rule=added),
            ev.SecurityGroupRuleRemoved(
                security_group_id="g", rule_id=defaults[0].id, updated_at="t2"
            ),
        ]
    )
    assert state.exists and state.version == 3
    assert [r.id for r in state.rules] == [defaults[1].id, "r1"]
    assert state.ingress == (added,)
    with pytest.raises(sg.NeutronRefusal, match="Rule id is r1"):
        sg.add_rule(
            state, rule(id="r2", protocol="TCP".lower(), port_range_min=22, port_range_max=22)
        )
    assert not fold([*[ev.SecurityGroupDeleted(id="g")]]).exists


def test_rule_normalisation() -> None:
    def made(**fields: Any) -> SecurityGroupRule:
        body = {"security_group_id": "g", "direction": "ingress", **fields}
        return sg.new_rule(body, rule_id="r", project_id="p", now=NOW)

    assert made(protocol="ICMP", ethertype="ipv6").protocol == "ipv6-icmp"
    assert made(protocol="any").protocol is None
    assert made(protocol="6", port_range_min="80", port_range_max=80).port_range_min == 80
    assert made(remote_ip_prefix="198.18.0.1").remote_ip_prefix == "198.18.0.1/32"
    with pytest.raises(sg.NeutronRefusal, match="SecurityGroupRuleInvalidProtocol|not supported"):
        made(protocol="chess")
    with pytest.raises(sg.NeutronRefusal, match="Invalid ethertype IPv4 for protocol ipv6-icmp"):
        made(protocol="ipv6-icmp")
    with pytest.raises(sg.NeutronRefusal, match="ICMP code"):
        made(protocol="icmp", port_range_max=3)
