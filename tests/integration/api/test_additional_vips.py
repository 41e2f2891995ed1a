"""additional_vips (API v2.26+) and IPv6 VIPs over raw HTTP: allocation from each subnet, the
body Octavia answers, Octavia's checks (one network, one address per subnet), address claims
that a deletion frees, and IPv6 VIPs and members."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.common.settings import NetworkSettings, SubnetConfig, default_subnets
from tests.integration.api.conftest import NETWORK, SUBNET, Api, MakeApi

LBS = "/v2/lbaas/loadbalancers"
SUBNET_B = "2b7c4d1e-0f3a-4b5c-8d9e-0a1b2c3d4e5f"
SUBNET_V6 = "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4"
OTHER_SUBNET = "4d3c2b1a-0f9e-4d8c-b7a6-958473625140"
OTHER_NETWORK = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d"


def network_settings() -> NetworkSettings:
    """The default public subnet, a second IPv4 and an IPv6 (ULA) subnet on its network, and
    a subnet of another network."""
    return NetworkSettings(
        subnets=[
            *default_subnets(),
            SubnetConfig(
                id=SUBNET_B,
                name="public-b",
                network_id=NETWORK,
                network_name="public",
                cidr="127.78.0.0/16",
                allocation_start="127.78.0.10",
                allocation_end="127.78.0.250",
            ),
            SubnetConfig(
                id=SUBNET_V6,
                name="public-v6",
                network_id=NETWORK,
                network_name="public",
                cidr="fd5e:ab01:7f00::/64",
                gateway_ip="fd5e:ab01:7f00::1",
                allocation_start="fd5e:ab01:7f00::10",
                allocation_end="fd5e:ab01:7f00::ffff",
            ),
            SubnetConfig(
                id=OTHER_SUBNET,
                name="other",
                network_id=OTHER_NETWORK,
                network_name="other",
                cidr="127.79.0.0/16",
                allocation_start="127.79.0.10",
                allocation_end="127.79.0.250",
            ),
        ]
    )


@pytest.fixture
async def vapi(make_api: MakeApi) -> Api:
    return await make_api(network=network_settings())


async def create(api: Api, **fields: Any) -> Any:
    return await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET, **fields}})


async def test_additional_vips_are_allocated_and_shown_like_the_primary(vapi: Api) -> None:
    reply = await create(vapi, additional_vips=[{"subnet_id": SUBNET_V6}, {"subnet_id": SUBNET_B}])
    assert reply.status == 201, reply.body
    lb = reply.body["loadbalancer"]
    assert lb["vip_address"] == "127.77.0.10"
    assert lb["additional_vips"] == [
        {"subnet_id": SUBNET_V6, "ip_address": "fd5e:ab01:7f00::10"},
        {"subnet_id": SUBNET_B, "ip_address": "127.78.0.10"},
    ]
    shown = (await vapi.get(f"{LBS}/{lb['id']}", expect=200)).body["loadbalancer"]
    assert shown["additional_vips"] == lb["additional_vips"]
    listed = (await vapi.get(LBS, expect=200)).body["loadbalancers"]
    assert [item["additional_vips"] for item in listed] == [lb["additional_vips"]]
    # The next LB gets the next address of each subnet.
    second = (await create(vapi, additional_vips=[{"subnet_id": SUBNET_V6}])).body
    assert second["loadbalancer"]["additional_vips"] == [
        {"subnet_id": SUBNET_V6, "ip_address": "fd5e:ab01:7f00::11"}
    ]
    plain = (await create(vapi)).body["loadbalancer"]
    assert plain["additional_vips"] == []


async def test_an_address_asked_for_is_claimed_and_a_deletion_frees_it(vapi: Api) -> None:
    extra = [{"subnet_id": SUBNET_V6, "ip_address": "fd5e:ab01:7f00::abc"}]
    reply = await create(vapi, additional_vips=extra)
    assert reply.status == 201, reply.body
    lb = reply.body["loadbalancer"]
    assert lb["additional_vips"] == [{"subnet_id": SUBNET_V6, "ip_address": "fd5e:ab01:7f00::abc"}]
    taken = await create(vapi, additional_vips=extra)
    assert taken.status == 409
    assert taken.fault() == (
        f"IP address fd5e:ab01:7f00::abc already allocated in subnet {SUBNET_V6}."
    )
    # Nor as a primary VIP of another LB.
    primary = await vapi.post(
        LBS,
        {"loadbalancer": {"vip_subnet_id": SUBNET_V6, "vip_address": "fd5e:ab01:7f00::abc"}},
    )
    assert primary.status == 409
    await vapi.activate(lb["id"])
    await vapi.delete(f"{LBS}/{lb['id']}", expect=204)
    await vapi.complete_deletion(lb["id"])
    again = await create(vapi, additional_vips=extra)
    assert again.status == 201, again.body


async def test_octavia_refuses_other_networks_and_two_addresses_on_one_subnet(vapi: Api) -> None:
    other = await create(vapi, additional_vips=[{"subnet_id": OTHER_SUBNET}])
    assert other.status == 400
    assert other.fault() == "Validation failure: All VIP subnets must belong to the same network."
    duplicate = "Validation failure: Duplicate VIP subnet(s) specified. Only one IP can be bound "
    duplicate += "per subnet."
    same_as_primary = await create(vapi, additional_vips=[{"subnet_id": SUBNET}])
    assert same_as_primary.status == 400 and same_as_primary.fault() == duplicate
    twice = await create(vapi, additional_vips=[{"subnet_id": SUBNET_V6}, {"subnet_id": SUBNET_V6}])
    assert twice.status == 400 and twice.fault() == duplicate
    missing = "0f0e0d0c-0b0a-4908-8706-050403020100"
    unknown = await create(vapi, additional_vips=[{"subnet_id": missing}])
    assert unknown.status == 400
    assert unknown.fault() == f"Validation failure: Subnet {missing} not found."
    outside = await create(
        vapi, additional_vips=[{"subnet_id": SUBNET_V6, "ip_address": "fd00::5"}]
    )
    assert outside.status == 400
    assert (
        outside.fault() == f"Validation failure: VIP address fd00::5 is not in subnet {SUBNET_V6}."
    )
    no_subnet = await create(vapi, additional_vips=[{"ip_address": "127.78.0.99"}])
    assert no_subnet.status == 400
    # Nothing was written by the refusals.
    assert (await vapi.get(LBS, expect=200)).body["loadbalancers"] == []


async def test_ipv6_vip_and_members_and_allowed_cidrs_of_either_family(vapi: Api) -> None:
    reply = await vapi.post(
        LBS,
        {
            "loadbalancer": {
                "vip_subnet_id": SUBNET_V6,
                "additional_vips": [{"subnet_id": SUBNET}],
                "listeners": [
                    {
                        "name": "web",
                        "protocol": "HTTP",
                        "protocol_port": 80,
                        "allowed_cidrs": ["fd5e:ab01:7f00::/48", "127.0.0.0/8"],
                        "default_pool": {
                            "name": "p",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                            "members": [
                                {"address": "fd5e:ab01:7f00::8", "protocol_port": 8080},
                                {"address": "127.0.0.1", "protocol_port": 8080},
                            ],
                        },
                    }
                ],
            }
        },
    )
    assert reply.status == 201, reply.body
    lb = reply.body["loadbalancer"]
    assert lb["vip_address"] == "fd5e:ab01:7f00::10"
    assert lb["additional_vips"] == [{"subnet_id": SUBNET, "ip_address": "127.77.0.10"}]
    pool_id = lb["pools"][0]["id"]
    members = (await vapi.get(f"/v2/lbaas/pools/{pool_id}/members", expect=200)).body
    addresses = sorted(m["address"] for m in members["members"])
    assert addresses == ["127.0.0.1", "fd5e:ab01:7f00::8"]
    listener_id = lb["listeners"][0]["id"]
    listener = (await vapi.get(f"/v2/lbaas/listeners/{listener_id}", expect=200)).body
    assert listener["listener"]["allowed_cidrs"] == ["fd5e:ab01:7f00::/48", "127.0.0.0/8"]


async def test_allowed_cidrs_must_match_the_family_of_some_vip(vapi: Api) -> None:
    lb = await vapi.create_lb()
    reply = await vapi.post(
        "/v2/lbaas/listeners",
        {
            "listener": {
                "loadbalancer_id": lb["id"],
                "protocol": "TCP",
                "protocol_port": 81,
                "allowed_cidrs": ["fd00::/8"],
            }
        },
    )
    assert reply.status == 400
    assert reply.fault() == (
        f"Validation failure: CIDR fd00::/8 IP version incompatible with VIP "
        f"{lb['vip_address']} IP version."
    )
    dual = (await create(vapi, additional_vips=[{"subnet_id": SUBNET_V6}])).body["loadbalancer"]
    await vapi.activate(dual["id"])
    accepted = await vapi.post(
        "/v2/lbaas/listeners",
        {
            "listener": {
                "loadbalancer_id": dual["id"],
                "protocol": "TCP",
                "protocol_port": 81,
                "allowed_cidrs": ["fd00::/8"],
            }
        },
    )
    assert accepted.status == 201, accepted.body


async def test_a_network_only_request_prefers_the_ipv4_subnet(make_api: MakeApi) -> None:
    v4_last = network_settings()
    v4_last.subnets.sort(key=lambda s: s.ip_version, reverse=True)  # the IPv6 subnet first
    api = await make_api(network=v4_last)
    reply = await api.post(LBS, {"loadbalancer": {"vip_network_id": NETWORK}})
    assert reply.status == 201, reply.body
    assert reply.body["loadbalancer"]["vip_subnet_id"] == SUBNET
    v6 = await api.post(
        LBS, {"loadbalancer": {"vip_network_id": NETWORK, "vip_address": "fd5e:ab01:7f00::99"}}
    )
    assert v6.status == 201, v6.body
    assert v6.body["loadbalancer"]["vip_subnet_id"] == SUBNET_V6


async def test_concurrent_creates_get_distinct_additional_addresses(vapi: Api) -> None:
    replies = await asyncio.gather(
        *(create(vapi, additional_vips=[{"subnet_id": SUBNET_V6}]) for _ in range(6))
    )
    assert [r.status for r in replies] == [201] * 6, [r.body for r in replies]
    extra = {r.body["loadbalancer"]["additional_vips"][0]["ip_address"] for r in replies}
    primary = {r.body["loadbalancer"]["vip_address"] for r in replies}
    assert len(extra) == 6 and len(primary) == 6


async def test_ipv6_vips_on_the_process_driver_are_the_providers_501_after_every_400(
    make_api: MakeApi,
) -> None:
    """Process amphorae hold loopback VIPs, which are IPv4: an IPv6 VIP (primary or
    additional) passes every validation and is then refused with the provider's 501; nothing
    is written. Docker and netns amphorae take it."""
    api = await make_api(network=network_settings(), amphora_driver="process")
    refusal = (
        "Provider 'amphora' does not support a requested option: IPv6 VIPs cannot be served "
        "by the process amphora driver of this deployment (its amphorae hold loopback VIPs, "
        "which are IPv4)."
    )
    outside = await create(api, additional_vips=[{"subnet_id": SUBNET_V6, "ip_address": "fd00::5"}])
    assert outside.status == 400, outside.body
    for fields in (
        {"vip_subnet_id": SUBNET_V6},
        {"additional_vips": [{"subnet_id": SUBNET_V6}]},
    ):
        reply = await create(api, **fields)
        assert reply.status == 501 and reply.fault() == refusal, reply.body
        assert reply.body["faultcode"] == "Server"
    assert (await api.get(LBS, expect=200)).body["loadbalancers"] == []
    ipv4 = await create(api, additional_vips=[{"subnet_id": SUBNET_B}])
    assert ipv4.status == 201, ipv4.body
    for driver in ("docker", "netns"):
        other = await make_api(network=network_settings(), amphora_driver=driver)
        assert (await create(other, vip_subnet_id=SUBNET_V6)).status == 201, driver
