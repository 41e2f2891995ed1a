"""The amphora scheduler (services/provisioner/domain/placement.py): least-loaded live host,
anti-affinity of an ACTIVE_STANDBY pair, soft versus hard with one live host, address shares;
the per-host driver reconciliation (domain/reconciliation.py) and the hosts setting."""

from __future__ import annotations

import ipaddress

import pytest

from services.provisioner.domain.placement import HostLoad, Placement, address_share, place
from services.provisioner.domain.reconciliation import InventoryRow, judge_driver
from services.provisioner.settings import ProvisionerSettings


def hosts(*spec: tuple[str, bool, int]) -> list[HostLoad]:
    return [HostLoad(name, live, count) for name, live, count in spec]


def test_the_least_loaded_live_host_wins_and_ties_go_to_the_first() -> None:
    assert place(hosts(("h1", True, 3), ("h2", True, 1), ("h3", True, 2)), (), "soft") == (
        Placement("h2")
    )
    assert place(hosts(("h1", True, 2), ("h2", True, 2)), (), "hard") == Placement("h1")


def test_a_dead_host_is_never_chosen_however_empty() -> None:
    assert place(hosts(("h1", False, 0), ("h2", True, 9)), (), "soft") == Placement("h2")


def test_no_live_host_refuses() -> None:
    refused = place(hosts(("h1", False, 0), ("h2", False, 0)), (), "soft")
    assert refused.host is None and "no live" in refused.reason
    assert place([], (), "soft").host is None


def test_the_peer_of_an_active_standby_lb_goes_to_another_host_even_a_busier_one() -> None:
    assert place(hosts(("h1", True, 0), ("h2", True, 5)), {"h1"}, "soft") == Placement("h2")
    assert place(hosts(("h1", True, 0), ("h2", True, 5)), {"h1"}, "hard") == Placement("h2")


def test_a_pair_spreads_over_hosts_when_placed_one_after_the_other() -> None:
    loads = {"h1": 0, "h2": 0, "h3": 0}
    for _ in range(6):  # six ACTIVE_STANDBY LBs, MASTER then BACKUP
        first = place(hosts(*((n, True, c) for n, c in loads.items())), (), "hard")
        assert first.host is not None
        loads[first.host] += 1
        second = place(hosts(*((n, True, c) for n, c in loads.items())), {first.host}, "hard")
        assert second.host not in (None, first.host)
        loads[second.host] += 1
    assert loads == {"h1": 4, "h2": 4, "h3": 4}


def test_one_live_host_left_soft_builds_degraded_hard_refuses() -> None:
    left = hosts(("h1", False, 4), ("h2", True, 1))
    assert place(left, {"h2"}, "soft") == Placement("h2", degraded=True)
    refused = place(left, {"h2"}, "hard")
    assert refused.host is None and "anti-affinity" in refused.reason


def test_address_shares_split_a_range_without_overlap() -> None:
    shares = [address_share("198.18.32.0/25", 3, i) for i in range(3)]
    assert shares == ["198.18.32.0/27", "198.18.32.32/27", "198.18.32.64/27"]
    assert address_share("198.18.32.0/25", 1, 0) == "198.18.32.0/25"
    networks = [ipaddress.ip_network(address_share("198.18.32.0/24", 2, i)) for i in range(2)]
    assert not networks[0].overlaps(networks[1])
    with pytest.raises(ValueError, match="too small"):
        address_share("198.18.32.0/29", 4, 0)
    with pytest.raises(ValueError, match="outside"):
        address_share("198.18.32.0/25", 2, 2)


def test_reconciliation_never_judges_an_amphora_on_a_host_out_of_sight() -> None:
    inventory = {
        "a1": InventoryRow("a1", "ALLOCATED", "lb1", "ACTIVE", host="h1"),
        "a2": InventoryRow("a2", "ALLOCATED", "lb2", "ACTIVE", host="h2"),
        "s2": InventoryRow("s2", "READY", None, None, host="h2"),
    }
    cut = judge_driver((), (), inventory, {}, 0.0, 60.0, visible_hosts={"h1"})
    assert [r.amphora_id for r in cut.missing] == ["a1"] and cut.missing_spares == ()
    both = judge_driver((), (), inventory, {}, 0.0, 60.0, visible_hosts={"h1", "h2"})
    assert [r.amphora_id for r in both.missing] == ["a1", "a2"]
    assert [r.amphora_id for r in both.missing_spares] == ["s2"]
    single = judge_driver((), (), inventory, {}, 0.0, 60.0)
    assert len(single.missing) == 2  # a single driver sees every amphora it runs


def test_the_hosts_setting_splits_addresses_and_refuses_overlaps() -> None:
    settings = ProvisionerSettings(hosts=[{"name": "h1"}, {"name": "h2"}])
    assert [settings.address_ranges(h) for h in settings.hosts] == [
        {"fulcrum": "198.18.32.0/26"},
        {"fulcrum": "198.18.32.64/26"},
    ]
    for hosts, why in [
        ([{"name": "h1"}, {"name": "h1"}], "distinct"),
        ([{"name": "h1", "ip_ranges": {"fulcrum": "198.18.32.64/27"}}, {"name": "h2"}], "share"),
        ([{"name": "h1", "ip_ranges": {"fulcrum": "198.18.40.0/26"}}], "outside"),
        ([{"name": "h1", "ip_ranges": {"other": "198.18.32.0/26"}}], "no netns network"),
    ]:
        with pytest.raises(ValueError, match=why):
            ProvisionerSettings(hosts=hosts)
