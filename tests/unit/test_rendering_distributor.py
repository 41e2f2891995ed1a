"""The distributor's ruleset: the serving slots in the jhash map (in order), the mark restored
for the original direction, no balancing rule when nothing serves, bad input refused."""

from __future__ import annotations

import pytest

from services.provisioner.adapters.netns_distributor import DistributorLayout
from services.provisioner.rendering.distributor import distribution_ruleset


def test_serving_slots_fill_the_jhash_map() -> None:
    script = distribution_ruleset("198.18.0.200", "eth0", [3, 1, 7], seed=0xBEEF)
    assert script.startswith("table ip fulcrum_distributor {\n")
    assert "flush chain ip fulcrum_distributor prerouting\n" in script
    balance, restore = script.splitlines()[-2:]
    assert balance == (
        'add rule ip fulcrum_distributor prerouting iifname "eth0" ip daddr 198.18.0.200 '
        "meta l4proto { tcp, udp } ct state new ct mark 0 ct mark set jhash ip saddr . "
        "th sport . ip daddr . th dport . meta l4proto mod 3 seed 0xbeef "
        "map { 0 : 3, 1 : 1, 2 : 7 }"
    )
    assert restore == (
        'add rule ip fulcrum_distributor prerouting iifname "eth0" ip daddr 198.18.0.200 '
        "ct direction original meta mark set ct mark"
    )


def test_nothing_serving_only_restores_marks() -> None:
    script = distribution_ruleset("198.18.0.200", "eth0", [], seed=1)
    assert "jhash" not in script
    assert script.rstrip().endswith("meta mark set ct mark")


@pytest.mark.parametrize(
    ("vip", "slots"),
    [("fd00::1", [1]), ("198.18.0.200", [1, 1]), ("198.18.0.200", [0]), ("nope", [1])],
)
def test_bad_input_is_refused(vip: str, slots: list[int]) -> None:
    with pytest.raises(ValueError):
        distribution_ruleset(vip, "eth0", slots, seed=1)


def test_layout_cuts_links_into_slots() -> None:
    layout = DistributorLayout("d", "n", "198.18.0.200", links="198.19.254.0/24")
    assert layout.capacity == 64
    assert layout.link_addresses(1) == ("198.19.254.1", "198.19.254.2")
    assert layout.link_addresses(3) == ("198.19.254.9", "198.19.254.10")
    assert DistributorLayout("d", "n", "198.18.0.200", links="198.19.0.0/16").capacity == 100
    assert DistributorLayout("d", "n", "198.18.0.200", links="198.19.0.0/31").capacity == 0
