"""Quotas over real HTTP: defaults, set (with the deprecated aliases), reset, the list of stored
quotas, the events behind them, enforcement on create, validation and RBAC."""

from __future__ import annotations

from libs.common.eventstore import PostgresEventStore
from libs.common.service import DB
from tests.integration.api.conftest import Api, MakeApi

QUOTAS = "/v2/lbaas/quotas"
PROJECT = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
NAMES = ("loadbalancer", "listener", "member", "pool", "healthmonitor", "l7policy", "l7rule")


def unlimited(project_id: str = PROJECT) -> dict[str, int | str]:
    limits: dict[str, int | str] = {name: -1 for name in NAMES}
    aliases = {"load_balancer": -1, "health_monitor": -1}
    return limits | aliases | {"project_id": project_id, "tenant_id": project_id}


async def test_defaults_and_an_unset_project_show_the_configured_limits(
    make_api: MakeApi,
) -> None:
    api = await make_api(quota={"listener": 7})
    for path, project in (
        (f"{QUOTAS}/defaults", "defaults"),
        (f"{QUOTAS}/{PROJECT}/default", PROJECT),
        (f"{QUOTAS}/{PROJECT}", PROJECT),
    ):
        reply = await api.get(path, expect=200)
        assert reply.body == {"quota": unlimited(project) | {"listener": 7}}, path
    reply = await api.get("/v2.0/quotas/defaults.json", expect=200)
    assert reply.body["quota"]["listener"] == 7
    assert (await api.get(QUOTAS, expect=200)).body == {"quotas": [], "quotas_links": []}


async def test_set_show_list_and_reset(api: Api) -> None:
    reply = await api.put(
        f"{QUOTAS}/{PROJECT}",
        {"quota": {"loadbalancer": 5, "health_monitor": 3, "listener": None}},
        expect=202,
    )
    quota = reply.body["quota"]
    assert quota["loadbalancer"] == quota["load_balancer"] == 5
    assert quota["healthmonitor"] == quota["health_monitor"] == 3
    assert quota["listener"] == -1 and quota["l7rule"] == -1
    shown = await api.get(f"/v2.0/lbaas/quotas/{PROJECT}", expect=200)
    assert shown.body == reply.body
    # A later PUT changes only what it names; the canonical name wins over its alias.
    reply = await api.put(
        f"{QUOTAS}/{PROJECT}", {"quota": {"pool": 0, "load_balancer": 9, "loadbalancer": 4}}
    )
    assert reply.status == 202
    assert reply.body["quota"]["pool"] == 0 and reply.body["quota"]["loadbalancer"] == 4
    assert reply.body["quota"]["healthmonitor"] == 3
    await api.put(f"{QUOTAS}/{OTHER}", {"quota": {"member": 10}}, expect=202)
    listed = (await api.get(QUOTAS, expect=200)).body
    assert [q["project_id"] for q in listed["quotas"]] == sorted([PROJECT, OTHER])
    mine = next(q for q in listed["quotas"] if q["project_id"] == PROJECT)
    # Lists show stored values: null is "the default".
    assert mine["loadbalancer"] == 4 and mine["listener"] is None and mine["load_balancer"] == 4
    only = (await api.get(f"{QUOTAS}?project_id={OTHER}", expect=200)).body["quotas"]
    assert [q["project_id"] for q in only] == [OTHER]
    page = (await api.get(f"{QUOTAS}?limit=1", expect=200)).body
    assert len(page["quotas"]) == 1 and page["quotas_links"][0]["rel"] == "next"
    follow = (await api.get(page["quotas_links"][0]["href"], expect=200)).body
    assert [q["project_id"] for q in follow["quotas"]] == [max(PROJECT, OTHER)]

    reset = await api.delete(f"{QUOTAS}/{PROJECT}", expect=202)
    assert reset.body is None
    assert (await api.get(f"{QUOTAS}/{PROJECT}", expect=200)).body == {"quota": unlimited()}
    # The record stays (all limits null), as Octavia keeps it.
    listed = (await api.get(QUOTAS, expect=200)).body["quotas"]
    assert [q["project_id"] for q in listed] == sorted([PROJECT, OTHER])
    mine = next(q for q in listed if q["project_id"] == PROJECT)
    assert all(mine[name] is None for name in NAMES)
    await api.put(f"{QUOTAS}/{OTHER}", {"quota": {"member": None}}, expect=202)
    assert len((await api.get(QUOTAS, expect=200)).body["quotas"]) == 2
    # Resetting again is 202 (the record exists).
    await api.delete(f"{QUOTAS}/{PROJECT}", expect=202)


async def test_writes_are_events_on_the_project_stream(api: Api) -> None:
    await api.put(f"{QUOTAS}/{PROJECT}", {"quota": {"pool": 2}}, expect=202)
    await api.put(f"{QUOTAS}/{PROJECT}", {"quota": {"pool": 2}}, expect=202)  # no change
    await api.delete(f"{QUOTAS}/{PROJECT}", expect=202)
    events = await PostgresEventStore(api.app[DB]).read_stream(f"quota-{PROJECT}")
    assert [e.event_type for e in events] == ["QuotaUpdated", "QuotaReset"]
    assert events[0].payload.model_dump() == {"project_id": PROJECT, "limits": {"pool": 2}}


async def test_stored_quota_is_enforced_on_create(api: Api) -> None:
    project = {"X-Project-Id": PROJECT}
    await api.put(f"{QUOTAS}/{PROJECT}", {"quota": {"loadbalancer": 1}}, expect=202)
    await api.create_lb(active=False, project_id=PROJECT)
    reply = await api.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"}},
        headers=project,
        expect=403,
    )
    assert reply.fault() == "Quota has been met for resources: Load Balancer"
    await api.put(f"{QUOTAS}/{PROJECT}", {"quota": {"loadbalancer": None}}, expect=202)
    await api.create_lb(active=False, project_id=PROJECT)


async def test_invalid_bodies_are_400(api: Api) -> None:
    path = f"{QUOTAS}/{PROJECT}"
    cases = {
        "below": ({"quota": {"pool": -2}}, "pool"),
        "above": ({"quota": {"member": 2_000_000_001}}, "member"),
        "string": ({"quota": {"listener": "five"}}, "quotas"),
        "unknown": ({"quota": {"amphora": 1}}, "amphora"),
        "envelope": ({"quotas": {"pool": 1}}, "Unknown attribute for argument quotas: quotas"),
    }
    for label, (body, named) in cases.items():
        reply = await api.put(path, body, expect=400)
        assert named in reply.fault(), (label, reply.fault())
    await api.put(path, None, expect=400)
    await api.put(f"{QUOTAS}/not%20a%20project", {"quota": {"pool": 1}}, expect=400)
    await api.get(f"{QUOTAS}?nonsense=1", expect=400)
    assert (await api.get(QUOTAS, expect=200)).body["quotas"] == []


async def test_rbac(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    member = {"X-Project-Id": PROJECT, "X-Roles": "member"}
    reader = {"X-Project-Id": PROJECT, "X-Roles": "reader"}
    stranger = {"X-Project-Id": OTHER, "X-Roles": "member"}
    quota_admin = {"X-Project-Id": OTHER, "X-Roles": "load-balancer_quota_admin"}
    admin = {"X-Project-Id": OTHER, "X-Roles": "admin"}
    body = {"quota": {"pool": 3}}
    for who in (member, reader, stranger):
        reply = await api.put(f"{QUOTAS}/{PROJECT}", body, headers=who, expect=403)
        assert reply.fault() == "Policy does not allow this request to be performed."
        await api.delete(f"{QUOTAS}/{PROJECT}", headers=who, expect=403)
    await api.put(f"{QUOTAS}/{PROJECT}", body, headers=quota_admin, expect=202)
    await api.put(f"{QUOTAS}/{OTHER}", body, headers=admin, expect=202)
    # Readers and members read their own project's quota, not another's.
    for who in (member, reader):
        await api.get(f"{QUOTAS}/{PROJECT}", headers=who, expect=200)
        await api.get(f"{QUOTAS}/{PROJECT}/default", headers=who, expect=200)
        await api.get(f"{QUOTAS}/defaults", headers=who, expect=200)
        await api.get(f"{QUOTAS}/{OTHER}", headers=who, expect=403)
        listed = (await api.get(QUOTAS, headers=who, expect=200)).body["quotas"]
        assert [q["project_id"] for q in listed] == [PROJECT]
        # A filter for another project still shows only the caller's own.
        listed = (await api.get(f"{QUOTAS}?project_id={OTHER}", headers=who)).body["quotas"]
        assert [q["project_id"] for q in listed] == [PROJECT]
    for who in (quota_admin, admin):
        listed = (await api.get(QUOTAS, headers=who, expect=200)).body["quotas"]
        assert len(listed) == 2
    await api.get(QUOTAS, headers={"X-Project-Id": PROJECT, "X-Roles": ""}, expect=403)
