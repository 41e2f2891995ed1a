"""Octavia fidelity, response rendering (octavia-fidelity.md 2.G) and which listeners a pool
shows (2.I.2): ``tenant_id`` beside ``project_id``, ``updated_at`` set by the worker's status
changes, the status tree's ``health_monitor`` key, ``vip_sg_ids`` and no ``provisioning_error``."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.api.conftest import SUBNET, Api

LBS = "/v2/lbaas/loadbalancers"
POOLS = "/v2/lbaas/pools"
PROJECT = "0123456789abcdef0123456789abcdef"


def tenant(body: dict[str, Any]) -> None:
    assert body["tenant_id"] == body["project_id"], body


async def test_tenant_id_everywhere(api: Api) -> None:
    created = await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET}}, expect=201)
    lb = created.body["loadbalancer"]
    tenant(lb)
    await api.activate(lb["id"])
    tenant((await api.get(f"{LBS}/{lb['id']}", expect=200)).body["loadbalancer"])
    for item in (await api.get(LBS, expect=200)).body["loadbalancers"]:
        tenant(item)
    updated = await api.put(f"{LBS}/{lb['id']}", {"loadbalancer": {"name": "n"}}, expect=200)
    tenant(updated.body["loadbalancer"])
    graph = {
        "vip_subnet_id": SUBNET,
        "listeners": [
            {
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {"name": "p"},
                "l7policies": [
                    {
                        "action": "REJECT",
                        "rules": [{"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x"}],
                    }
                ],
            }
        ],
        "pools": [
            {
                "name": "p",
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "members": [{"address": "127.0.0.1", "protocol_port": 80}],
                "healthmonitor": {"type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2},
            }
        ],
    }
    full = (await api.post(LBS, {"loadbalancer": graph}, expect=201)).body["loadbalancer"]
    tenant(full)
    listener, pool = full["listeners"][0], full["pools"][0]
    tenant(listener)
    tenant(listener["l7policies"][0])
    tenant(listener["l7policies"][0]["rules"][0])
    tenant(pool)
    tenant(pool["members"][0])
    tenant(pool["healthmonitor"])
    await api.activate(full["id"])
    for path, key in (
        (f"/v2/lbaas/listeners/{listener['id']}", "listener"),
        (f"{POOLS}/{pool['id']}", "pool"),
        (f"{POOLS}/{pool['id']}/members/{pool['members'][0]['id']}", "member"),
        (f"/v2/lbaas/healthmonitors/{pool['healthmonitor']['id']}", "healthmonitor"),
        (f"/v2/lbaas/l7policies/{listener['l7policies'][0]['id']}", "l7policy"),
    ):
        tenant((await api.get(path, expect=200)).body[key])
    quota = (await api.get(f"/v2/lbaas/quotas/{PROJECT}", expect=200)).body["quota"]
    assert quota["tenant_id"] == quota["project_id"] == PROJECT


async def test_updated_at_is_set_when_the_worker_settles(api: Api) -> None:
    lb = (await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET}}, expect=201)).body[
        "loadbalancer"
    ]
    assert lb["updated_at"] is None
    await api.activate(lb["id"])
    shown = (await api.get(f"{LBS}/{lb['id']}", expect=200)).body["loadbalancer"]
    assert shown["updated_at"] is not None and shown["updated_at"] >= shown["created_at"]
    assert len(shown["updated_at"]) == len("2026-12-06T08:00:00")
    body = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
    listener = (await api.post("/v2/lbaas/listeners", {"listener": body}, expect=201)).body[
        "listener"
    ]
    assert listener["updated_at"] is None
    await api.settle(lb["id"])
    shown = (await api.get(f"/v2/lbaas/listeners/{listener['id']}", expect=200)).body["listener"]
    assert shown["provisioning_status"] == "ACTIVE" and shown["updated_at"] is not None


async def test_status_tree_sg_ids_and_pool_listeners(api: Api) -> None:
    lb = await api.create_lb()
    assert lb["vip_sg_ids"] == [] and "provisioning_error" not in lb
    lb_id = lb["id"]
    listener = await api.create_listener(lb_id)
    default = await api.create(
        "pools",
        "pool",
        {"listener_id": listener["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
    )
    await api.settle(lb_id)
    target = await api.create(
        "pools",
        "pool",
        {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
    )
    await api.settle(lb_id)
    hm = await api.create(
        "healthmonitors",
        "healthmonitor",
        {"pool_id": default["id"], "type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2},
    )
    await api.settle(lb_id)
    policy = await api.create(
        "l7policies",
        "l7policy",
        {
            "listener_id": listener["id"],
            "action": "REDIRECT_TO_POOL",
            "redirect_pool_id": target["id"],
        },
    )
    await api.settle(lb_id)
    # A redirect policy without rules does not count.
    shown = (await api.get(f"{POOLS}/{target['id']}", expect=200)).body["pool"]
    assert shown["listeners"] == []

    async def tree_pools() -> list[dict[str, Any]]:
        tree = (await api.get(f"{LBS}/{lb_id}/status", expect=200)).body["statuses"]
        return list(tree["loadbalancer"]["listeners"][0]["pools"])

    pools = await tree_pools()
    assert [p["id"] for p in pools] == [default["id"]]
    assert pools[0]["health_monitor"] == {
        "id": hm["id"],
        "name": "",
        "operating_status": "ONLINE",
        "provisioning_status": "ACTIVE",
        "type": "TCP",
    }
    await api.create(
        f"l7policies/{policy['id']}/rules",
        "rule",
        {"type": "PATH", "compare_type": "EQUAL_TO", "value": "/x"},
    )
    await api.settle(lb_id)
    shown = (await api.get(f"{POOLS}/{target['id']}", expect=200)).body["pool"]
    assert shown["listeners"] == [{"id": listener["id"]}]
    pools = await tree_pools()
    assert [p["id"] for p in pools] == [default["id"], target["id"]]
    assert pools[1]["health_monitor"] is None
    # A disabled policy does not count either.
    await api.put(f"/v2/lbaas/l7policies/{policy['id']}", {"l7policy": {"admin_state_up": False}})
    await api.settle(lb_id)
    shown = (await api.get(f"{POOLS}/{target['id']}", expect=200)).body["pool"]
    assert shown["listeners"] == []


async def test_a_child_change_touches_its_listeners(api: Api) -> None:
    lb = await api.create_lb()
    listener = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80},
    )
    await api.settle(lb["id"])
    path = f"/v2/lbaas/listeners/{listener['id']}"
    before = (await api.get(path, expect=200)).body["listener"]["updated_at"]
    assert before is not None
    await asyncio.sleep(1.1)  # updated_at has whole seconds
    await api.create(
        "pools",
        "pool",
        {"listener_id": listener["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
    )
    await api.settle(lb["id"])
    after = (await api.get(path, expect=200)).body["listener"]["updated_at"]
    assert after > before
