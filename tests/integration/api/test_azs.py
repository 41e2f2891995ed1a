"""Availability zones (keyed by name) and their profiles over real HTTP: CRUD, data validation,
in-use rules, RBAC, subject-safe stream names, and load balancers created in a zone."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from libs.common import subjects
from libs.common.eventstore import PostgresEventStore
from libs.common.service import DB, JETSTREAM
from tests.integration.api.conftest import NETWORK, SUBNET, Api, MakeApi

ZONES = "/v2/lbaas/availabilityzones"
PROFILES = "/v2/lbaas/availabilityzoneprofiles"
LBS = "/v2/lbaas/loadbalancers"


async def profile(api: Api, data: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {
        "name": "zone-a",
        "provider_name": "amphora",
        "availability_zone_data": json.dumps(data if data is not None else {}),
    }
    reply = await api.post(PROFILES, {"availability_zone_profile": body}, expect=201)
    return dict(reply.body["availability_zone_profile"])


async def zone(api: Api, profile_id: str, name: str = "az1", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "availability_zone_profile_id": profile_id, **extra}
    reply = await api.post(ZONES, {"availability_zone": body}, expect=201)
    return dict(reply.body["availability_zone"])


async def test_profile_crud_and_validation(api: Api) -> None:
    data = {"valid_vip_networks": [NETWORK]}
    created = await profile(api, data)
    assert set(created) == {"id", "name", "provider_name", "availability_zone_data"}
    one = f"{PROFILES}/{created['id']}"
    assert (await api.get(one, expect=200)).body == {"availability_zone_profile": created}
    listed = (await api.get(PROFILES, expect=200)).body
    assert listed == {
        "availability_zone_profiles": [created],
        "availability_zone_profile_links": [],
    }
    renamed = await api.put(one, {"availability_zone_profile": {"name": "b"}}, expect=200)
    assert renamed.body["availability_zone_profile"]["name"] == "b"

    def body(data: str) -> dict[str, Any]:
        fields = {"name": "p", "provider_name": "amphora", "availability_zone_data": data}
        return {"availability_zone_profile": fields}

    reply = await api.post(PROFILES, body("]"), expect=400)
    assert reply.fault() == "] is not a valid option for availability_zone_data"
    for data in ('{"compute_zone": "nova"}', '{"valid_vip_networks": "net"}', '{"region": "x"}'):
        await api.post(PROFILES, body(data), expect=501)
    await api.put(one, {"availability_zone_profile": {"availability_zone_data": "{"}}, expect=400)
    await api.delete(one, expect=204)
    await api.get(one, expect=404)


async def test_zone_crud_by_name_and_in_use_rules(api: Api) -> None:
    prof = await profile(api)
    created = await zone(api, prof["id"], description="first")
    assert created == {
        "name": "az1",
        "description": "first",
        "enabled": True,
        "availability_zone_profile_id": prof["id"],
    }
    one = f"{ZONES}/az1"
    assert (await api.get(one, expect=200)).body == {"availability_zone": created}
    assert (await api.get("/v2.0/availabilityzones/az1.json", expect=200)).body[
        "availability_zone"
    ] == created
    reply = await api.put(one, {"availability_zone": {"enabled": False}}, expect=200)
    assert reply.body["availability_zone"]["enabled"] is False
    await api.put(one, {"availability_zone": {"name": "az2"}}, expect=400)  # the key is fixed
    reply = await api.post(
        ZONES, {"availability_zone": {"name": "az1", "availability_zone_profile_id": prof["id"]}}
    )
    assert reply.status == 409 and reply.fault() == "A availability zone of az1 already exists."
    prof_path = f"{PROFILES}/{prof['id']}"
    body = {"availability_zone_profile": {"availability_zone_data": '{"valid_vip_networks": []}'}}
    reply = await api.put(prof_path, body, expect=409)
    assert reply.fault() == (
        f"Availability Zone Profile {prof['id']} is in use and cannot be modified."
    )
    await api.delete(prof_path, expect=409)
    listed = (await api.get(f"{ZONES}?enabled=false", expect=200)).body["availability_zones"]
    assert [z["name"] for z in listed] == ["az1"]
    await api.delete(one, expect=204)
    await api.get(one, expect=404)
    await api.delete(one, expect=404)
    # The name is free again; its stream goes on.
    await zone(api, prof["id"])
    events = await PostgresEventStore(api.app[DB]).read_stream("availabilityzone-az1")
    assert [e.event_type for e in events] == [
        "AvailabilityZoneCreated",
        "AvailabilityZoneUpdated",
        "AvailabilityZoneDeleted",
        "AvailabilityZoneCreated",
    ]


async def test_names_that_are_not_subject_tokens(api: Api) -> None:
    prof = await profile(api)
    created = await zone(api, prof["id"], name="eu west.1 *")
    assert created["name"] == "eu west.1 *"
    reply = await api.get(f"{ZONES}/eu%20west.1%20*", expect=200)
    assert reply.body["availability_zone"]["name"] == "eu west.1 *"
    subject = subjects.event_subject("availabilityzone-eu west.1 *", "AvailabilityZoneCreated")
    assert subject == "fulcrum.events.availabilityzone.eu%20west%2E1%20%2A.AvailabilityZoneCreated"
    # The relay publishes it under that subject (and so leaves the outbox empty).
    deadline = asyncio.get_running_loop().time() + 10
    while await api.app[DB].fetchval("SELECT count(*) FROM outbox"):
        assert asyncio.get_running_loop().time() < deadline, "the relay did not publish"
        await asyncio.sleep(0.05)
    message = await api.app[JETSTREAM].get_last_msg(subjects.STREAM_NAME, subject)
    assert json.loads(message.data)["data"]["name"] == "eu west.1 *"
    for bad in ("", "a/b", "tab\there", "n" * 256):
        body = {"availability_zone": {"name": bad, "availability_zone_profile_id": prof["id"]}}
        await api.post(ZONES, body, expect=400)
    missing = str(uuid.uuid4())
    body = {"availability_zone": {"name": "x", "availability_zone_profile_id": missing}}
    reply = await api.post(ZONES, body, expect=400)
    assert reply.fault() == f"{missing} is not a valid option for availability_zone_profile_id"


async def test_rbac(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    admin = {"X-Project-Id": "a" * 32, "X-Roles": "admin"}
    member = {"X-Project-Id": "b" * 32, "X-Roles": "member"}
    fields = {"name": "p", "provider_name": "amphora", "availability_zone_data": "{}"}
    reply = await api.post(
        PROFILES, {"availability_zone_profile": fields}, headers=admin, expect=201
    )
    prof_id = reply.body["availability_zone_profile"]["id"]
    await api.post(PROFILES, {"availability_zone_profile": fields}, headers=member, expect=403)
    await api.get(PROFILES, headers=member, expect=403)
    zone_body = {"availability_zone": {"name": "az", "availability_zone_profile_id": prof_id}}
    await api.post(ZONES, zone_body, headers=member, expect=403)
    await api.post(ZONES, zone_body, headers=admin, expect=201)
    listed = (await api.get(ZONES, headers=member, expect=200)).body["availability_zones"]
    assert [z["name"] for z in listed] == ["az"]
    await api.get(f"{ZONES}/az", headers=member, expect=200)
    await api.put(
        f"{ZONES}/az", {"availability_zone": {"enabled": False}}, headers=member, expect=403
    )
    await api.delete(f"{ZONES}/az", headers=member, expect=403)


async def test_loadbalancer_create_in_a_zone(api: Api) -> None:
    open_zone = await profile(api, {})
    narrow = await profile(api, {"valid_vip_networks": [str(uuid.uuid4())]})
    await zone(api, open_zone["id"], name="az-open")
    await zone(api, narrow["id"], name="az-narrow")
    await zone(api, open_zone["id"], name="az-off", enabled=False)
    lb = await api.create_lb(active=False, availability_zone="az-open")
    assert lb["availability_zone"] == "az-open"

    def body(name: str) -> dict[str, Any]:
        return {"loadbalancer": {"vip_subnet_id": SUBNET, "availability_zone": name}}

    reply = await api.post(LBS, body("nowhere"), expect=400)
    assert reply.fault() == "Validation failure: Invalid availability zone."
    reply = await api.post(LBS, body("az-off"), expect=400)
    assert reply.fault() == (
        "The selected availability_zone is not allowed in this deployment: az-off"
    )
    reply = await api.post(LBS, body("az-narrow"), expect=400)
    assert "VIP network_id is not allowed" in reply.fault()
    reply = await api.delete(f"{ZONES}/az-open", expect=409)
    assert reply.fault() == "Availability Zone az-open is in use and cannot be modified."
    listed = (await api.get(f"{LBS}?availability_zone=az-open", expect=200)).body
    assert [x["id"] for x in listed["loadbalancers"]] == [lb["id"]]
