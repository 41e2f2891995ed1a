"""Flavors and flavor profiles over real HTTP: CRUD, flavor_data validation, the in-use rules
(409), unique names, RBAC, their event streams, and load balancers created with a flavor."""

from __future__ import annotations

import json
import uuid
from typing import Any

from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.service import DB
from tests.integration.api.conftest import SUBNET, Api, MakeApi
from tests.integration.api.test_additional_vips import SUBNET_B, SUBNET_V6, network_settings

FLAVORS = "/v2/lbaas/flavors"
PROFILES = "/v2/lbaas/flavorprofiles"
LBS = "/v2/lbaas/loadbalancers"


async def profile(api: Api, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body = {
        "name": "ha",
        "provider_name": "amphora",
        "flavor_data": json.dumps(data if data is not None else {}),
        **extra,
    }
    reply = await api.post(PROFILES, {"flavorprofile": body}, expect=201)
    return dict(reply.body["flavorprofile"])


async def flavor(api: Api, profile_id: str, name: str = "gold", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "flavor_profile_id": profile_id, **extra}
    reply = await api.post(FLAVORS, {"flavor": body}, expect=201)
    return dict(reply.body["flavor"])


async def test_flavor_profile_crud(api: Api) -> None:
    data = {"loadbalancer_topology": "ACTIVE_STANDBY"}
    created = await profile(api, data)
    assert set(created) == {"id", "name", "provider_name", "flavor_data"}
    assert created["provider_name"] == "amphora" and json.loads(created["flavor_data"]) == data
    one = f"{PROFILES}/{created['id']}"
    assert (await api.get(one, expect=200)).body == {"flavorprofile": created}
    assert (await api.get(f"{one}?fields=name", expect=200)).body == {
        "flavorprofile": {"name": "ha"}
    }
    listed = (await api.get("/v2.0/flavorprofiles", expect=200)).body
    assert listed == {"flavorprofiles": [created], "flavorprofile_links": []}
    reply = await api.put(one, {"flavorprofile": {"name": "ha2", "flavor_data": "{}"}}, expect=200)
    assert reply.body["flavorprofile"] == {**created, "name": "ha2", "flavor_data": "{}"}
    await api.put(one, {"flavorprofile": {"provider_name": "octavia"}}, expect=200)
    await api.delete(one, expect=204)
    await api.get(one, expect=404)
    await api.delete(one, expect=404)
    reply = await api.put(one, {"flavorprofile": {"name": "x"}}, expect=404)
    assert reply.fault() == f"Flavor Profile {created['id']} not found."
    events = await PostgresEventStore(api.app[DB]).read_stream(f"flavorprofile-{created['id']}")
    assert [e.event_type for e in events] == [
        "FlavorProfileCreated",
        "FlavorProfileUpdated",
        "FlavorProfileUpdated",
        "FlavorProfileDeleted",
    ]


async def test_flavor_data_validation(api: Api) -> None:
    def body(data: str, provider: str = "amphora") -> dict[str, Any]:
        return {"flavorprofile": {"name": "p", "provider_name": provider, "flavor_data": data}}

    reply = await api.post(PROFILES, body("{not json"), expect=400)
    assert reply.fault() == "{not json is not a valid option for flavor_data"
    reply = await api.post(PROFILES, body("{}", provider="f5"), expect=400)
    assert reply.fault() == "Provider 'f5' is not enabled."
    # The provider refuses what it cannot honour: Octavia's 501.
    unsupported = {
        '{"loadbalancer_topology": "TRIPLE"}': "loadbalancer_topology",
        '{"loadbalancer_topology": 3}': "loadbalancer_topology",
        # Octavia's settings that change nothing here are not capabilities: refused.
        '{"compute_flavor": "m1"}': "Additional properties are not allowed ('compute_flavor'",
        '{"sriov_vip": false}': "Additional properties are not allowed ('sriov_vip'",
        '{"disk": "big"}': "Additional properties are not allowed",
        "[1, 2]": "is not of type 'object'",
    }
    for data, named in unsupported.items():
        reply = await api.post(PROFILES, body(data), expect=501)
        assert reply.fault().startswith("Provider 'amphora' does not support a requested option")
        assert named in reply.fault(), reply.fault()
    reply = await api.post(PROFILES, body("x" * 4097), expect=400)
    assert "flavor_data" in reply.fault()
    for missing in ("name", "provider_name", "flavor_data"):
        fields = body("{}")["flavorprofile"]
        del fields[missing]
        reply = await api.post(PROFILES, {"flavorprofile": fields}, expect=400)
        assert missing in reply.fault()
    reply = await api.post(PROFILES, {"flavorprofile": {**body("{}")["flavorprofile"], "x": 1}})
    assert reply.status == 400 and "x" in reply.fault()
    created = await profile(api)
    one = f"{PROFILES}/{created['id']}"
    await api.put(one, {"flavorprofile": {"flavor_data": "nope"}}, expect=400)
    await api.put(one, {"flavorprofile": {"flavor_data": '{"x": 1}'}}, expect=501)
    await api.put(one, {"flavorprofile": {"provider_name": "f5"}}, expect=400)
    await api.put(one, {"flavorprofile": {"name": None}}, expect=400)
    assert (await api.get(PROFILES, expect=200)).body["flavorprofiles"] == [created]


async def test_flavor_crud_and_in_use_rules(api: Api) -> None:
    prof = await profile(api, {"loadbalancer_topology": "SINGLE"})
    created = await flavor(api, prof["id"], description="fast")
    assert created == {
        "id": created["id"],
        "name": "gold",
        "description": "fast",
        "enabled": True,
        "flavor_profile_id": prof["id"],
    }
    one = f"{FLAVORS}/{created['id']}"
    assert (await api.get(one, expect=200)).body == {"flavor": created}
    reply = await api.put(one, {"flavor": {"enabled": False, "description": None}}, expect=200)
    assert reply.body["flavor"] == {**created, "enabled": False, "description": ""}
    await api.put(one, {"flavor": {"flavor_profile_id": prof["id"]}}, expect=400)  # immutable
    # The profile's provider and data are frozen while a flavor uses it; its name is not.
    prof_path = f"{PROFILES}/{prof['id']}"
    reply = await api.put(prof_path, {"flavorprofile": {"flavor_data": "{}"}}, expect=409)
    assert reply.fault() == f"Flavor profile {prof['id']} is in use and cannot be modified."
    await api.put(prof_path, {"flavorprofile": {"provider_name": "octavia"}}, expect=409)
    await api.put(prof_path, {"flavorprofile": {"name": "renamed"}}, expect=200)
    # The same data again is no change, so no conflict.
    same = prof["flavor_data"]
    await api.put(prof_path, {"flavorprofile": {"flavor_data": same}}, expect=200)
    await api.delete(prof_path, expect=409)
    # Names are unique; ids of missing profiles are a 400.
    reply = await api.post(FLAVORS, {"flavor": {"name": "gold", "flavor_profile_id": prof["id"]}})
    assert reply.status == 409 and reply.fault() == "A flavor of gold already exists."
    missing = str(uuid.uuid4())
    reply = await api.post(FLAVORS, {"flavor": {"name": "x", "flavor_profile_id": missing}})
    assert reply.status == 400
    assert reply.fault() == f"{missing} is not a valid option for flavor_profile_id"
    second = await flavor(api, prof["id"], name="silver")
    await api.put(f"{FLAVORS}/{second['id']}", {"flavor": {"name": "gold"}}, expect=409)
    listed = (await api.get(f"{FLAVORS}?name=silver", expect=200)).body
    assert listed == {"flavors": [second], "flavors_links": []}
    page = (await api.get(f"{FLAVORS}?limit=1", expect=200)).body
    assert len(page["flavors"]) == 1 and page["flavors_links"][0]["rel"] == "next"
    await api.get(f"{FLAVORS}?bogus=1", expect=400)
    await api.delete(one, expect=204)
    await api.delete(f"{FLAVORS}/{second['id']}", expect=204)
    await api.get(one, expect=404)
    await api.delete(prof_path, expect=204)
    # A deleted flavor's name is free again.
    other = await profile(api)
    await flavor(api, other["id"])


async def test_flavor_validation(api: Api) -> None:
    prof = await profile(api)
    bad = {
        "no name": {"flavor_profile_id": prof["id"]},
        "no profile": {"name": "x"},
        "bad uuid": {"name": "x", "flavor_profile_id": "not-a-uuid"},
        "long name": {"name": "n" * 256, "flavor_profile_id": prof["id"]},
        "enabled string": {"name": "x", "flavor_profile_id": prof["id"], "enabled": "maybe"},
    }
    for label, fields in bad.items():
        reply = await api.post(FLAVORS, {"flavor": fields})
        assert reply.status == 400, label
    await api.put(f"{FLAVORS}/{uuid.uuid4()}", {"flavor": {"name": "x"}}, expect=404)
    await api.get(f"{FLAVORS}/{uuid.uuid4()}", expect=404)
    assert (await api.get(FLAVORS, expect=200)).body["flavors"] == []


async def test_rbac(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    admin = {"X-Project-Id": "a" * 32, "X-Roles": "admin"}
    member = {"X-Project-Id": "b" * 32, "X-Roles": "member"}
    reader = {"X-Project-Id": "b" * 32, "X-Roles": "reader"}
    nobody = {"X-Project-Id": "b" * 32, "X-Roles": ""}
    body = {"name": "p", "provider_name": "amphora", "flavor_data": "{}"}
    reply = await api.post(PROFILES, {"flavorprofile": body}, headers=admin, expect=201)
    prof = reply.body["flavorprofile"]
    fl = {"name": "f", "flavor_profile_id": prof["id"]}
    for who in (member, reader):
        await api.post(PROFILES, {"flavorprofile": body}, headers=who, expect=403)
        await api.get(PROFILES, headers=who, expect=403)
        await api.get(f"{PROFILES}/{prof['id']}", headers=who, expect=403)
        await api.post(FLAVORS, {"flavor": fl}, headers=who, expect=403)
    created = (await api.post(FLAVORS, {"flavor": fl}, headers=admin, expect=201)).body["flavor"]
    one = f"{FLAVORS}/{created['id']}"
    for who in (member, reader):
        assert (await api.get(FLAVORS, headers=who, expect=200)).body["flavors"] == [created]
        await api.get(one, headers=who, expect=200)
        await api.put(one, {"flavor": {"name": "g"}}, headers=who, expect=403)
        await api.delete(one, headers=who, expect=403)
    await api.get(FLAVORS, headers=nobody, expect=403)
    await api.delete(one, headers=admin, expect=204)


async def test_loadbalancer_create_takes_the_flavor_topology(api: Api) -> None:
    ha = await profile(api, {"loadbalancer_topology": "ACTIVE_STANDBY"})
    plain = await profile(api, {"loadbalancer_topology": "SINGLE"})
    gold = await flavor(api, ha["id"], name="gold")
    bronze = await flavor(api, plain["id"], name="bronze")
    lb = await api.create_lb(active=False, flavor_id=gold["id"])
    assert lb["flavor_id"] == gold["id"]
    repo = LoadBalancerRepository(PostgresEventStore(api.app[DB]))
    state = await repo.load(lb["id"])
    assert state.loadbalancer is not None and state.loadbalancer.topology == "ACTIVE_STANDBY"
    other = await api.create_lb(active=False, flavor_id=bronze["id"])
    state = await repo.load(other["id"])
    assert state.loadbalancer is not None and state.loadbalancer.topology == "SINGLE"
    listed = (await api.get(f"{LBS}?flavor_id={gold['id']}", expect=200)).body["loadbalancers"]
    assert [x["id"] for x in listed] == [lb["id"]]
    # A flavor a live load balancer uses cannot go; once the LB is deleted, it can.
    reply = await api.delete(f"{FLAVORS}/{bronze['id']}", expect=409)
    assert reply.fault() == f"Flavor {bronze['id']} is in use and cannot be modified."
    await api.activate(other["id"])
    await api.delete(f"{LBS}/{other['id']}", expect=204)
    await api.complete_deletion(other["id"])
    await api.delete(f"{FLAVORS}/{bronze['id']}", expect=204)


async def test_loadbalancer_create_refuses_missing_or_disabled_flavors(api: Api) -> None:
    missing = str(uuid.uuid4())
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "flavor_id": missing}}
    reply = await api.post(LBS, body, expect=400)
    assert reply.fault() == "Validation failure: Invalid flavor_id."
    prof = await profile(api)
    off = await flavor(api, prof["id"], name="off", enabled=False)
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "flavor_id": off["id"]}}
    reply = await api.post(LBS, body, expect=400)
    assert reply.fault() == f"The selected flavor is not allowed in this deployment: {off['id']}"
    await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET, "flavor_id": "x"}}, expect=400)
    assert (await api.get(LBS, expect=200)).body["loadbalancers"] == []


async def test_active_active_flavors_carry_amphora_bounds(api: Api) -> None:
    """ACTIVE_ACTIVE bounds: advertised, 400 in Octavia's fault format when bad, and stored
    on the load balancers created with the flavor."""
    capabilities = (await api.get("/v2/lbaas/providers/amphora/flavor_capabilities")).body
    names = {c["name"] for c in capabilities["flavor_capabilities"]}
    assert {"loadbalancer_topology", "amphora_min", "amphora_max"} <= names
    bad = {"loadbalancer_topology": "ACTIVE_ACTIVE", "amphora_min": 3, "amphora_max": 2}
    body = {"name": "aa", "provider_name": "amphora", "flavor_data": json.dumps(bad)}
    reply = await api.post(PROFILES, {"flavorprofile": body}, expect=400)
    assert reply.fault() == "Validation failure: amphora_min 3 is greater than amphora_max 2."
    body["flavor_data"] = json.dumps({"amphora_min": 2})
    reply = await api.post(PROFILES, {"flavorprofile": body}, expect=400)
    assert "only apply to the ACTIVE_ACTIVE" in reply.fault()
    aa_data = {
        "loadbalancer_topology": "ACTIVE_ACTIVE",
        "amphora_min": 2,
        "autoscale": {"sustain": 3},
    }
    aa = await profile(api, aa_data)
    lb = await api.create_lb(active=False, flavor_id=(await flavor(api, aa["id"]))["id"])
    assert "amphora_bounds" not in lb and "topology" not in lb
    state = await LoadBalancerRepository(PostgresEventStore(api.app[DB])).load(lb["id"])
    assert state.loadbalancer is not None and state.loadbalancer.topology == "ACTIVE_ACTIVE"
    bounds = state.loadbalancer.amphora_bounds
    assert bounds is not None and (bounds.amphora_min, bounds.amphora_max) == (2, 8)
    assert state.loadbalancer.autoscale == {"sustain": 3.0} and "autoscale" not in lb
    body["flavor_data"] = json.dumps({**aa_data, "autoscale": {"sustain": -1}})
    reply = await api.post(PROFILES, {"flavorprofile": body}, expect=400)
    assert reply.fault() == "Validation failure: autoscale sustain -1 is not a number >= 0."


async def test_active_active_spreads_one_ipv4_vip(make_api: MakeApi) -> None:
    """The distributor spreads one IPv4 VIP: an IPv6 VIP or additional_vips are refused
    with 501, after the 400 checks and before anything is written."""
    api = await make_api(network=network_settings())
    aa = await profile(api, {"loadbalancer_topology": "ACTIVE_ACTIVE"})
    flavor_id = (await flavor(api, aa["id"]))["id"]
    refusals = [
        {"vip_subnet_id": SUBNET_V6},
        {"vip_subnet_id": SUBNET, "additional_vips": [{"subnet_id": SUBNET_B}]},
    ]
    for fields in refusals:
        body = {"loadbalancer": {"flavor_id": flavor_id, **fields}}
        reply = await api.post(LBS, body, expect=501)
        assert "spreads one IPv4 VIP" in reply.fault()
    assert (await api.get(LBS, expect=200)).body["loadbalancers"] == []
    body = {"loadbalancer": {"flavor_id": flavor_id, "vip_subnet_id": SUBNET}}
    await api.post(LBS, body, expect=201)


async def test_active_active_needs_a_driver_with_a_distributor(make_api: MakeApi) -> None:
    """The netns and docker drivers spread an ACTIVE_ACTIVE VIP; the process driver's
    amphorae cannot: its refusal is Octavia's 501, and nothing is written."""
    data = {"loadbalancer_topology": "ACTIVE_ACTIVE", "amphora_min": 2}
    body = {"flavorprofile": {"name": "aa", "provider_name": "amphora"}}
    body["flavorprofile"]["flavor_data"] = json.dumps(data)
    for driver in ("netns", "docker"):
        api = await make_api(amphora_driver=driver)
        await api.post(PROFILES, body, expect=201)
    # The process driver, and a deployment whose provisioner has no distributor (compose's
    # docker provisioner does not run as root; compose names no driver) refuse it.
    for refusing in (
        {"amphora_driver": "process"},
        {"amphora_driver": "docker", "distributor": False},
        {"distributor": False},
    ):
        api = await make_api(**refusing)
        before = (await api.get(PROFILES, expect=200)).body["flavorprofiles"]
        reply = await api.post(PROFILES, body, expect=501)
        assert "does not support the ACTIVE_ACTIVE topology" in reply.fault(), reply.fault()
        assert (await api.get(PROFILES, expect=200)).body["flavorprofiles"] == before
