"""Concurrent load balancer creates and VIP addresses: while addresses are free, no create is
refused for lack of one, no address is given twice, and the overflow of a full subnet gets
Octavia's 409."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from libs.common.settings import NetworkSettings, SubnetConfig, default_subnets
from tests.integration.api.conftest import NETWORK, SUBNET, Api, MakeApi, Reply

LBS = "/v2/lbaas/loadbalancers"
CONCURRENCY = 64
SMALL = "5c1e7a2d-9b3f-4e8a-8c6d-2f1a0b9c8d7e"
# A /26: 127.80.0.2 .. 127.80.0.61 is the pool (127.80.0.1 the gateway), 60 addresses.
SMALL_FREE = 60


def network_settings() -> NetworkSettings:
    return NetworkSettings(
        subnets=[
            *default_subnets(),
            SubnetConfig(
                id=SMALL,
                name="small",
                network_id=NETWORK,
                network_name="public",
                cidr="127.80.0.0/26",
                gateway_ip="127.80.0.1",
                allocation_start="127.80.0.2",
                allocation_end="127.80.0.61",
            ),
        ]
    )


@pytest.fixture
async def vapi(make_api: MakeApi) -> Api:
    return await make_api(network=network_settings())


async def create_many(api: Api, count: int, **fields: Any) -> list[Reply]:
    return list(
        await asyncio.gather(*(api.post(LBS, {"loadbalancer": dict(fields)}) for _ in range(count)))
    )


def created(replies: list[Reply]) -> list[dict[str, Any]]:
    return [r.body["loadbalancer"] for r in replies if r.status == 201]


async def test_concurrent_creates_on_the_default_subnet_all_succeed(vapi: Api) -> None:
    replies = await create_many(vapi, CONCURRENCY, vip_subnet_id=SUBNET)
    assert [r.status for r in replies] == [201] * CONCURRENCY, [
        r.body for r in replies if r.status != 201
    ]
    addresses = [lb["vip_address"] for lb in created(replies)]
    assert len(set(addresses)) == CONCURRENCY
    # Uncontended again: the lowest free address.
    lowest = min(ipaddress.ip_address(a) for a in addresses)
    first = (await vapi.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET}}, expect=201)).body
    assert ipaddress.ip_address(first["loadbalancer"]["vip_address"]) > lowest


async def test_concurrent_creates_fill_a_small_subnet_and_only_the_overflow_is_refused(
    vapi: Api,
) -> None:
    replies = await create_many(vapi, CONCURRENCY, vip_subnet_id=SMALL)
    ok = created(replies)
    refused = [r for r in replies if r.status != 201]
    assert len(ok) == SMALL_FREE, [r.body for r in refused]
    assert {r.status for r in refused} == {409}
    assert {r.fault() for r in refused} == {f"No more IP addresses available on subnet {SMALL}."}
    addresses = {lb["vip_address"] for lb in ok}
    assert addresses == {f"127.80.0.{n}" for n in range(2, 62)}
    # A deletion frees an address, and the next create gets exactly that one.
    victim = next(lb for lb in ok if lb["vip_address"] == "127.80.0.33")
    await vapi.activate(victim["id"])
    await vapi.delete(f"{LBS}/{victim['id']}", expect=204)
    await vapi.complete_deletion(victim["id"])
    again = await vapi.post(LBS, {"loadbalancer": {"vip_subnet_id": SMALL}}, expect=201)
    assert again.body["loadbalancer"]["vip_address"] == "127.80.0.33"


async def test_concurrent_creates_with_additional_vips(vapi: Api) -> None:
    replies = await create_many(
        vapi, CONCURRENCY, vip_subnet_id=SUBNET, additional_vips=[{"subnet_id": SMALL}]
    )
    ok = created(replies)
    refused = [r for r in replies if r.status != 201]
    assert len(ok) == SMALL_FREE, [r.body for r in refused]
    assert {r.fault() for r in refused} == {f"No more IP addresses available on subnet {SMALL}."}
    primaries = [lb["vip_address"] for lb in ok]
    extras = [lb["additional_vips"][0]["ip_address"] for lb in ok]
    assert len(set(primaries)) == len(ok)
    assert set(extras) == {f"127.80.0.{n}" for n in range(2, 62)}
    # Every address shown is the one claimed: the primaries of refused creates were released.
    listed = (await vapi.get(LBS, expect=200)).body["loadbalancers"]
    assert sorted(lb["vip_address"] for lb in listed) == sorted(primaries)
