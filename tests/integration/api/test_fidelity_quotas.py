"""Octavia fidelity, quotas (octavia-fidelity.md 2.B): bodies with ``project_id`` and
``tenant_id``, the "defaults" project, 202 empty resets that keep the record, 404 without one."""

from __future__ import annotations

from tests.integration.api.conftest import SUBNET, Api, MakeApi

QUOTAS = "/v2/lbaas/quotas"
PROJECT = "0123456789abcdef0123456789abcdef"


def body(project_id: str, **limits: int | None) -> dict[str, object]:
    values: dict[str, int | None] = {
        "loadbalancer": -1,
        "listener": -1,
        "member": -1,
        "pool": -1,
        "healthmonitor": -1,
        "l7policy": -1,
        "l7rule": -1,
    } | limits
    return {
        "project_id": project_id,
        **values,
        "load_balancer": values["loadbalancer"],
        "health_monitor": values["healthmonitor"],
        "tenant_id": project_id,
    }


async def test_show_default_and_defaults_carry_the_project(make_api: MakeApi) -> None:
    api = await make_api(quota={"pool": 4})
    shown = await api.get(f"{QUOTAS}/{PROJECT}", expect=200)
    assert shown.body == {"quota": body(PROJECT, pool=4)}
    assert shown.headers["Content-Type"].startswith("application/json")
    default = await api.get(f"{QUOTAS}/{PROJECT}/default", expect=200)
    assert default.body == {"quota": body(PROJECT, pool=4)}
    defaults = await api.get(f"{QUOTAS}/defaults", expect=200)
    assert defaults.body == {"quota": body("defaults", pool=4)}


async def test_put_answers_202_with_the_body_and_empty_put_is_a_noop(api: Api) -> None:
    reply = await api.put(f"{QUOTAS}/{PROJECT}", {"quota": {"member": 9}}, expect=202)
    assert reply.body == {"quota": body(PROJECT, member=9)}
    reply = await api.put(f"{QUOTAS}/{PROJECT}", {"quota": {}}, expect=202)
    assert reply.body == {"quota": body(PROJECT, member=9)}


async def test_delete_is_202_empty_keeps_the_record_and_404s_without_one(api: Api) -> None:
    missing = await api.delete(f"{QUOTAS}/{PROJECT}", expect=404)
    assert missing.fault() == f"Quotas {PROJECT} not found."
    assert missing.body["faultcode"] == "Client"
    assert "x-openstack-request-id" in {k.lower() for k in missing.headers}
    # An empty PUT creates the record.
    await api.put(f"{QUOTAS}/{PROJECT}", {"quota": {}}, expect=202)
    for _ in range(2):
        reset = await api.delete(f"{QUOTAS}/{PROJECT}", expect=202)
        assert reset.body is None
    listed = (await api.get(QUOTAS, expect=200)).body["quotas"]
    nulls = dict.fromkeys(
        ("loadbalancer", "listener", "member", "pool", "healthmonitor", "l7policy", "l7rule")
    )
    assert listed == [body(PROJECT, **nulls)]


async def test_enforcement_records_a_quota_on_first_create(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    admin = {"X-Project-Id": PROJECT, "X-Roles": "admin"}
    member = {"X-Project-Id": PROJECT, "X-Roles": "member"}
    missing = await api.delete(f"{QUOTAS}/{PROJECT}", headers=admin, expect=404)
    assert missing.fault() == f"Quotas {PROJECT} not found."
    body = {"loadbalancer": {"vip_subnet_id": SUBNET}}
    await api.post("/v2/lbaas/loadbalancers", body, headers=member, expect=201)
    listed = (await api.get(QUOTAS, headers=admin, expect=200)).body["quotas"]
    assert [q["project_id"] for q in listed] == [PROJECT]
    await api.delete(f"{QUOTAS}/{PROJECT}", headers=admin, expect=202)


async def test_each_project_gets_its_record_on_its_own_first_create(make_api: MakeApi) -> None:
    """The API remembers projects it saw with a record (no re-read after each create): a
    project's second create keeps its one record, another project's first still gets one."""
    api = await make_api(auth_strategy="testing")
    other = "fedcba9876543210fedcba9876543210"
    admin = {"X-Project-Id": PROJECT, "X-Roles": "admin"}
    body = {"loadbalancer": {"vip_subnet_id": SUBNET}}
    for project in (PROJECT, PROJECT, other):
        member = {"X-Project-Id": project, "X-Roles": "member"}
        await api.post("/v2/lbaas/loadbalancers", body, headers=member, expect=201)
    listed = (await api.get(QUOTAS, headers=admin, expect=200)).body["quotas"]
    assert sorted(q["project_id"] for q in listed) == sorted([PROJECT, other])


async def test_noauth_creates_no_quota_record(api: Api) -> None:
    await api.create_lb(project_id=PROJECT)
    assert (await api.get(QUOTAS, expect=200)).body["quotas"] == []
