"""Golden-file tests of UDP rendering: the provisioner's ``render_udp`` (LB state -> UdpConfig,
``golden/udp/<example>.json``) and the agent's nftables script for it with every member in
service (``golden/udp/<example>.nft``); plus slot sharing and the monitors' counting.
``FULCRUM_UPDATE_GOLDEN=1`` rewrites the golden files. tests/integration/netns/
test_nftables_runner.py checks every golden script with ``nft -c`` in a namespace.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest

from libs.common.agent_contract import UdpConfig
from libs.common.domain.model import LoadBalancerState
from services.amphora.udp_health import MemberHealth, expected
from services.amphora.udp_ruleset import SLOTS, assign_slots, elements, endpoint, ruleset
from services.provisioner.rendering.udp import render_udp
from tests.unit.test_rendering import UPDATE_ENV, StateBuilder

GOLDEN_UDP: Final = Path(__file__).parent / "golden" / "udp"


def example_round_robin_dns() -> LoadBalancerState:
    """A DNS listener, two members (one weighted 3, one admin-down), a UDP-CONNECT monitor;
    a TCP listener on the same port that UDP rendering leaves to HAProxy."""
    b = StateBuilder("198.18.0.10")
    listener = b.listener("UDP", 53, "dns")
    pool = b.pool("UDP", listener=listener)
    b.member(pool, "198.18.1.1", 5353, weight=3)
    b.member(pool, "198.18.1.2", 5353)
    b.member(pool, "198.18.1.3", 5353, admin_state_up=False)
    b.monitor(pool, "UDP-CONNECT", delay=3, timeout=2, max_retries=2, max_retries_down=3)
    b.listener("TCP", 53)
    return b.build()


def example_persistence() -> LoadBalancerState:
    """SOURCE_IP persistence with a /24 granularity; SOURCE_IP and SOURCE_IP_PORT pools; an
    HTTP monitor with its fields; a listener without a pool; a deleting listener and member."""
    b = StateBuilder("198.18.0.10")
    sticky = b.listener("UDP", 5060, "sip")
    pool = b.pool(
        "UDP",
        listener=sticky,
        session_persistence={
            "type": "SOURCE_IP",
            "persistence_timeout": 120,
            "persistence_granularity": "255.255.255.0",
        },
    )
    b.member(pool, "198.18.1.1", 5060, monitor_address="198.18.2.1", monitor_port=8080)
    b.member(pool, "198.18.1.2", 5060, provisioning_status="PENDING_DELETE")
    b.monitor(
        pool, "HTTP", http_method="GET", url_path="/health", expected_codes="200-204",
        max_retries_down=2,
    )  # fmt: skip
    hashed = b.listener("UDP", 514, "syslog")
    hashed_pool = b.pool("UDP", "SOURCE_IP", listener=hashed)
    b.member(hashed_pool, "198.18.1.4", 514)
    by_port = b.listener("UDP", 4500)
    by_port_pool = b.pool("UDP", "SOURCE_IP_PORT", listener=by_port)
    b.member(by_port_pool, "198.18.1.5", 4500)
    b.listener("UDP", 123, "no pool")
    b.listener("UDP", 69, provisioning_status="PENDING_DELETE")
    default_timeout = b.listener("UDP", 27015)
    b.member(
        b.pool("UDP", listener=default_timeout, session_persistence={"type": "SOURCE_IP"}),
        "198.18.1.6",
        27015,
    )
    return b.build()


def example_ipv6() -> LoadBalancerState:
    b = StateBuilder("fd00:1::10")
    listener = b.listener("UDP", 53)
    pool = b.pool("UDP", listener=listener)
    b.member(pool, "fd00:2::1", 53)
    b.member(pool, "fd00:2::2", 53)
    return b.build()


def example_admin_down_lb() -> LoadBalancerState:
    b = StateBuilder("198.18.0.10", admin_state_up=False)
    b.member(b.pool("UDP", listener=b.listener("UDP", 53)), "198.18.1.1", 53)
    return b.build()


EXAMPLES: Final[dict[str, Callable[[], LoadBalancerState]]] = {
    "round_robin_dns": example_round_robin_dns,
    "persistence": example_persistence,
    "ipv6": example_ipv6,
    "admin_down_lb": example_admin_down_lb,
}


def all_up_script(config: UdpConfig) -> str:
    """The agent's whole script for ``config`` with every enabled, weighted member up."""
    tables = {
        li.id: assign_slots([], {m.id: m.weight for m in li.members if m.enabled})
        for li in config.listeners
    }
    endpoints = {m.id: endpoint(m.address, m.port) for li in config.listeners for m in li.members}
    return ruleset(config) + elements(config, tables, endpoints)


def _golden(path: Path, text: str) -> None:
    if os.environ.get(UPDATE_ENV) == "1":
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with {UPDATE_ENV}=1"
    assert text == path.read_text()


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_udp_rendering_matches_golden_files(example: str) -> None:
    config = render_udp(EXAMPLES[example]())
    as_json = json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    _golden(GOLDEN_UDP / f"{example}.json", as_json)
    _golden(GOLDEN_UDP / f"{example}.nft", all_up_script(config))


def test_empty_config_removes_the_table() -> None:
    assert render_udp(example_admin_down_lb()) == UdpConfig()
    assert ruleset(UdpConfig()) == "table inet fulcrum_udp {}\ndelete table inet fulcrum_udp\n"


def test_slots_follow_weights_and_alternate() -> None:
    table = assign_slots([], {"a": 3, "b": 1})
    assert Counter(table) == {"a": 768, "b": 256}
    assert table[:9] == ["a", "b", "a", "a", "a", "b", "a", "a", "a"]
    even = assign_slots([], {"a": 1, "b": 1})
    assert even[:4] == ["a", "b", "a", "b"]
    assert assign_slots(even, {"a": 0, "b": 1}) == ["b"] * SLOTS
    assert assign_slots(even, {}) == []


def test_slots_move_only_for_members_that_leave_or_come() -> None:
    three = assign_slots([], {"a": 1, "b": 1, "c": 1})
    two = assign_slots(three, {"a": 1, "b": 1})
    moved = [i for i in range(SLOTS) if three[i] != two[i]]
    assert all(three[i] == "c" for i in moved)  # only c's clients move
    assert abs(two.count("a") - two.count("b")) <= 1
    back = assign_slots(["b"] * SLOTS, {"a": 1, "b": 1})
    assert back.count("a") == back.count("b") == SLOTS // 2
    # Consecutive flows still alternate after a member's share shrank.
    assert all(back[i] != back[i + 1] for i in range(SLOTS - 1))


def test_member_health_counts_in_a_row() -> None:
    health = MemberHealth(rise=2, fall=3)
    assert health.up
    assert [health.record(False) for _ in range(3)] == [False, False, True]
    assert not health.up
    assert [health.record(True), health.record(False), health.record(True)] == [False] * 3
    assert health.record(True) and health.up


def test_expected_codes() -> None:
    assert expected("200", 200) and not expected("200", 201)
    assert expected("200-204", 204) and not expected("200-204", 205)
    assert expected("200,202", 202) and not expected("200,202", 201)
