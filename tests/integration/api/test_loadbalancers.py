"""Load balancers over real HTTP: create (VIP placement), show, update, delete and cascade,
status tree, stats, failover, the PENDING lock and concurrent writers, plus the API's
protocol-level behaviour (versions, Accept, fault bodies, request ids, path aliases)."""

from __future__ import annotations

import asyncio

from libs.common.service import DB
from tests.integration.api.conftest import NETWORK, SUBNET, Api

LBS = "/v2/lbaas/loadbalancers"


async def test_version_document_links_to_v2(api: Api) -> None:
    reply = await api.get("/", expect=200)
    versions = reply.body["versions"]
    assert [v["id"] for v in versions] == [f"v2.{n}" for n in range(31)]
    assert versions[-1]["status"] == "CURRENT"
    assert {v["status"] for v in versions[:-1]} == {"SUPPORTED"}
    assert versions[-1]["links"][0]["rel"] == "self"
    assert versions[-1]["links"][0]["href"].endswith("/v2")
    assert reply.headers["x-openstack-request-id"].startswith("req-")


async def test_accept_header_negotiation(api: Api) -> None:
    for accept in ("application/json", "*/*", "application/json; charset=utf-8", ""):
        await api.get(LBS, headers={"Accept": accept}, expect=200)
    reply = await api.get(LBS, headers={"Accept": "text/html"}, expect=406)
    assert reply.body["errors"][0]["status"] == 406
    assert "x-openstack-request-id" in reply.headers


async def test_unknown_route_and_method_use_the_pecan_body(api: Api) -> None:
    reply = await api.get("/v2/lbaas/nothing-here", expect=404)
    assert reply.body == {"code": 404, "title": "Not Found", "description": ""}
    reply = await api.call("PATCH", LBS, expect=405)
    assert reply.body == {"code": 405, "title": "Method Not Allowed", "description": ""}
    assert reply.headers["Allow"] == "DELETE, GET, POST, PUT"


async def test_every_prefix_and_json_suffix_serve_the_collection(api: Api) -> None:
    lb = await api.create_lb(name="alias")
    for path in (
        "/v2/lbaas/loadbalancers",
        "/v2.0/lbaas/loadbalancers",
        "/v2/loadbalancers",
        "/v2.0/loadbalancers",
        "/v2.0/lbaas/loadbalancers.json",
    ):
        reply = await api.get(path, expect=200)
        assert [x["id"] for x in reply.body["loadbalancers"]] == [lb["id"]]
    reply = await api.get(f"/v2/loadbalancers/{lb['id']}.json", expect=200)
    assert reply.body["loadbalancer"]["id"] == lb["id"]


async def test_create_answers_pending_create_with_octavia_fields(api: Api) -> None:
    reply = await api.post(
        "/v2.0/lbaas/loadbalancers",
        {"loadbalancer": {"name": "web", "vip_subnet_id": SUBNET, "admin_state_up": True}},
        expect=201,
    )
    lb = reply.body["loadbalancer"]
    assert lb["provisioning_status"] == "PENDING_CREATE"
    assert lb["operating_status"] == "OFFLINE"
    assert lb["vip_address"] == "127.77.0.10"
    assert lb["vip_subnet_id"] == SUBNET and lb["vip_network_id"] == NETWORK
    assert lb["listeners"] == [] and lb["pools"] == [] and lb["tags"] == []
    assert lb["provider"] == "amphora" and lb["description"] == ""
    assert len(lb["project_id"]) == 32
    for key in ("vip_port_id", "vip_qos_policy_id", "flavor_id", "created_at", "updated_at"):
        assert key in lb
    second = await api.create_lb(active=False)
    assert second["vip_address"] == "127.77.0.11"
    assert second["vip_port_id"] != lb["vip_port_id"]
    shown = await api.get(f"{LBS}/{lb['id']}", expect=200)
    assert shown.body["loadbalancer"]["vip_port_id"] == lb["vip_port_id"]


async def test_vip_placement_rules(api: Api) -> None:
    lb = await api.create_lb(vip_address="127.77.3.3")
    assert lb["vip_address"] == "127.77.3.3"
    reply = await api.post(
        LBS, {"loadbalancer": {"vip_subnet_id": SUBNET, "vip_address": "127.77.3.3"}}
    )
    assert reply.status == 409, reply.body
    assert "already allocated" in reply.fault()
    reply = await api.post(
        LBS, {"loadbalancer": {"vip_subnet_id": SUBNET, "vip_address": "10.9.9.9"}}
    )
    assert reply.status == 400 and "not in subnet" in reply.fault()
    missing = "0f0f0f0f-0000-4000-8000-000000000000"
    reply = await api.post(LBS, {"loadbalancer": {"vip_subnet_id": missing}})
    assert reply.status == 400
    assert reply.fault() == f"Validation failure: Subnet {missing} not found."
    by_network = await api.create_lb(active=False, vip_subnet_id=None, vip_network_id=NETWORK)
    assert by_network["vip_subnet_id"] == SUBNET
    reply = await api.post(LBS, {"loadbalancer": {"vip_port_id": missing}})
    assert reply.status == 400 and "Port" in reply.fault()
    reply = await api.post(LBS, {"loadbalancer": {"name": "no-vip"}})
    assert reply.status == 400


async def test_deleted_lb_frees_its_vip_and_concurrent_creates_get_distinct_addresses(
    api: Api,
) -> None:
    replies = await asyncio.gather(
        *(api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET}}) for _ in range(6))
    )
    assert [r.status for r in replies] == [201] * 6
    addresses = {r.body["loadbalancer"]["vip_address"] for r in replies}
    assert len(addresses) == 6
    first = replies[0].body["loadbalancer"]
    await api.activate(first["id"])
    await api.delete(f"{LBS}/{first['id']}", expect=204)
    await api.complete_deletion(first["id"])
    again = await api.create_lb(active=False, vip_address=first["vip_address"])
    assert again["vip_address"] == first["vip_address"]


async def test_input_validation_errors_name_the_field(api: Api) -> None:
    reply = await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET, "colour": "red"}})
    assert reply.status == 400
    assert reply.fault() == "Unknown attribute for argument load_balancer.loadbalancer: colour"
    reply = await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET, "name": "x" * 256}})
    assert reply.status == 400
    assert reply.fault().startswith("Invalid input for field/attribute name. Value: 'xxx")
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "admin_state_up": "maybe"}}
    reply = await api.post(LBS, body)
    assert reply.status == 400 and reply.fault() == (
        f"Invalid input for field/attribute load_balancer. Value: '{body}'. "
        "Value not an unambiguous boolean: maybe"
    )
    reply = await api.call("POST", LBS, raw=b"{not json")
    assert reply.status == 400 and reply.fault() == "Request is not in valid JSON format"
    reply = await api.post(LBS, {"listener": {}})
    assert reply.status == 400
    assert reply.fault() == "Unknown attribute for argument load_balancer: listener"
    reply = await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET, "tags": ["t" * 256]}})
    assert reply.status == 400 and "field/attribute tags. Value: '['ttt" in reply.fault()
    reply = await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET, "provider": "f5"}})
    assert reply.status == 400 and "not enabled" in reply.fault()


async def test_show_update_and_immutable_fields(api: Api) -> None:
    lb = await api.create_lb(name="before", tags=["a"])
    path = f"{LBS}/{lb['id']}"
    reply = await api.put(
        path, {"loadbalancer": {"name": "after", "description": "d", "tags": ["b"]}}, expect=200
    )
    body = reply.body["loadbalancer"]
    assert body["name"] == "after" and body["tags"] == ["b"]
    assert body["provisioning_status"] == "PENDING_UPDATE"
    reply = await api.put(path, {"loadbalancer": {"name": "again"}})
    assert reply.status == 409
    assert "Invalid state PENDING_UPDATE" in reply.fault()
    await api.settle(lb["id"])
    for immutable in ({"vip_address": "127.77.9.9"}, {"vip_subnet_id": SUBNET}, {"provider": "x"}):
        reply = await api.put(path, {"loadbalancer": immutable})
        assert reply.status == 400, immutable
    reply = await api.put(path, {"loadbalancer": {"name": None}}, expect=200)
    assert reply.body["loadbalancer"]["name"] == ""
    reply = await api.get(f"{path}?fields=id&fields=name", expect=200)
    assert reply.body == {"loadbalancer": {"id": lb["id"], "name": ""}}
    await api.get(f"{LBS}/00000000-0000-4000-8000-000000000000", expect=404)


async def test_pending_lb_makes_children_immutable(api: Api) -> None:
    lb = await api.create_lb(active=False)
    reply = await api.post(
        "/v2/lbaas/listeners",
        {"listener": {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}},
    )
    assert reply.status == 409
    assert reply.fault() == f"Load Balancer {lb['id']} is immutable and cannot be updated."
    reply = await api.delete(f"{LBS}/{lb['id']}")
    assert reply.status == 409


async def test_delete_needs_cascade_when_children_exist(api: Api) -> None:
    lb = await api.create_lb()
    listener = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80},
    )
    await api.settle(lb["id"])
    path = f"{LBS}/{lb['id']}"
    reply = await api.delete(path)
    assert reply.status == 400 and "it has children" in reply.fault()
    await api.delete(f"{path}?cascade=bogus", expect=400)
    await api.delete(f"{path}?cascade=True", expect=204)
    shown = await api.get(path, expect=200)
    assert shown.body["loadbalancer"]["provisioning_status"] == "PENDING_DELETE"
    child = await api.get(f"/v2/lbaas/listeners/{listener['id']}", expect=200)
    assert child.body["listener"]["provisioning_status"] == "PENDING_DELETE"
    await api.complete_deletion(lb["id"])
    await api.get(path, expect=404)
    await api.get(f"/v2/lbaas/listeners/{listener['id']}", expect=404)
    listed = await api.get(LBS, expect=200)
    assert listed.body["loadbalancers"] == []
    await api.delete(path, expect=404)


async def test_status_tree_shape(api: Api) -> None:
    lb = await api.create_lb(name="tree")
    listener = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80, "name": "l"},
    )
    await api.settle(lb["id"])
    pool = await api.create(
        "pools",
        "pool",
        {
            "listener_id": listener["id"],
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "name": "p",
        },
    )
    await api.settle(lb["id"])
    member = await api.create(
        f"pools/{pool['id']}/members", "member", {"address": "127.0.0.5", "protocol_port": 8080}
    )
    await api.settle(lb["id"])
    hm = await api.create(
        "healthmonitors",
        "healthmonitor",
        {"pool_id": pool["id"], "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3},
    )
    await api.settle(lb["id"])
    for suffix in ("status", "statuses"):
        reply = await api.get(f"{LBS}/{lb['id']}/{suffix}", expect=200)
        tree = reply.body["statuses"]["loadbalancer"]
        assert set(tree) == {"id", "name", "operating_status", "provisioning_status", "listeners"}
        assert tree["provisioning_status"] == "ACTIVE"
        (li,) = tree["listeners"]
        assert li["id"] == listener["id"] and li["name"] == "l"
        (po,) = li["pools"]
        assert po["id"] == pool["id"]
        assert po["health_monitor"] == {
            "id": hm["id"],
            "name": "",
            "type": "HTTP",
            "provisioning_status": "ACTIVE",
            "operating_status": "ONLINE",
        }
        assert po["members"] == [
            {
                "id": member["id"],
                "name": "",
                "operating_status": "NO_MONITOR",
                "provisioning_status": "ACTIVE",
                "address": "127.0.0.5",
                "protocol_port": 8080,
            }
        ]


async def test_stats_sum_listener_rows(api: Api) -> None:
    lb = await api.create_lb()
    listener = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 22},
    )
    zeros = {
        "bytes_in": 0,
        "bytes_out": 0,
        "active_connections": 0,
        "total_connections": 0,
        "request_errors": 0,
    }
    reply = await api.get(f"{LBS}/{lb['id']}/stats", expect=200)
    assert reply.body == {"stats": zeros}
    async with api.app[DB].acquire() as conn:
        for amp in ("a1", "a2"):
            await conn.execute(
                "INSERT INTO listener_stats VALUES ($1, $2, $3, 10, 20, 1, 5, 2)",
                listener["id"],
                amp,
                lb["id"],
            )
    expected = {
        "bytes_in": 20,
        "bytes_out": 40,
        "active_connections": 2,
        "total_connections": 10,
        "request_errors": 4,
    }
    assert (await api.get(f"{LBS}/{lb['id']}/stats", expect=200)).body == {"stats": expected}
    reply = await api.get(f"/v2/lbaas/listeners/{listener['id']}/stats", expect=200)
    assert reply.body == {"stats": expected}


async def test_failover_is_accepted_for_admins_only(api: Api, make_api: object) -> None:
    lb = await api.create_lb()
    reply = await api.put(f"{LBS}/{lb['id']}/failover", None, expect=202)
    assert reply.body is None
    shown = await api.get(f"{LBS}/{lb['id']}", expect=200)
    assert shown.body["loadbalancer"]["provisioning_status"] == "PENDING_UPDATE"
    await api.put(f"{LBS}/{lb['id']}/failover", None, expect=409)


async def test_concurrent_updates_one_wins_the_other_conflicts(api: Api) -> None:
    lb = await api.create_lb()
    path = f"{LBS}/{lb['id']}"
    for round_ in range(3):
        replies = await asyncio.gather(
            api.put(path, {"loadbalancer": {"name": f"a{round_}"}}),
            api.put(path, {"loadbalancer": {"name": f"b{round_}"}}),
        )
        assert sorted(r.status for r in replies) == [200, 409], [r.body for r in replies]
        await api.settle(lb["id"])


async def test_single_call_graph_create(api: Api) -> None:
    graph = {
        "name": "graph",
        "vip_subnet_id": SUBNET,
        "listeners": [
            {
                "name": "http",
                "protocol": "HTTP",
                "protocol_port": 80,
                "default_pool": {"name": "web"},
                "l7policies": [
                    {
                        "name": "api",
                        "action": "REDIRECT_TO_POOL",
                        "redirect_pool": {
                            "name": "api",
                            "protocol": "HTTP",
                            "lb_algorithm": "LEAST_CONNECTIONS",
                        },
                        "rules": [{"type": "PATH", "compare_type": "STARTS_WITH", "value": "/api"}],
                    },
                    {
                        "action": "REJECT",
                        "position": 1,
                        "rules": [
                            {
                                "type": "HOST_NAME",
                                "compare_type": "EQUAL_TO",
                                "value": "bad.example",
                            }
                        ],
                    },
                ],
            },
            {"name": "tcp", "protocol": "TCP", "protocol_port": 443},
        ],
        "pools": [
            {
                "name": "web",
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "healthmonitor": {"type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2},
                "members": [
                    {"address": "127.0.0.11", "protocol_port": 8080},
                    {"address": "127.0.0.12", "protocol_port": 8080, "weight": 5},
                ],
            }
        ],
    }
    reply = await api.post(LBS, {"loadbalancer": graph}, expect=201)
    lb = reply.body["loadbalancer"]
    assert lb["provisioning_status"] == "PENDING_CREATE"
    by_name = {li["name"]: li for li in lb["listeners"]}
    assert set(by_name) == {"http", "tcp"}
    pools = {p["name"]: p for p in lb["pools"]}
    assert set(pools) == {"web", "api"}
    assert by_name["http"]["default_pool_id"] == pools["web"]["id"]
    assert len(pools["web"]["members"]) == 2
    assert pools["web"]["healthmonitor"]["url_path"] == "/"
    assert all(m["operating_status"] == "OFFLINE" for m in pools["web"]["members"])
    policies = by_name["http"]["l7policies"]
    assert [(p["action"], p["position"]) for p in policies] == [
        ("REJECT", 1),
        ("REDIRECT_TO_POOL", 2),
    ]
    assert policies[1]["redirect_pool_id"] == pools["api"]["id"]
    assert policies[0]["rules"][0]["value"] == "bad.example"
    await api.activate(lb["id"])
    listed = await api.get(f"/v2/lbaas/pools?loadbalancer_id={lb['id']}", expect=200)
    assert {p["provisioning_status"] for p in listed.body["pools"]} == {"ACTIVE"}
    # Incoherent graphs are refused whole.
    bad = {
        "vip_subnet_id": SUBNET,
        "listeners": [{"protocol": "HTTP", "protocol_port": 80, "default_pool": {"name": "ghost"}}],
    }
    reply = await api.post(LBS, {"loadbalancer": bad})
    assert reply.status == 400 and "ghost" in reply.fault()
    dup = {
        "vip_subnet_id": SUBNET,
        "listeners": [
            {"protocol": "HTTP", "protocol_port": 80},
            {"protocol": "TCP", "protocol_port": 80},
        ],
    }
    assert (await api.post(LBS, {"loadbalancer": dup})).status == 409


async def test_quota_exceeded_is_forbidden(make_api: object) -> None:
    from services.api.settings import QuotaDefaults

    api = await make_api(quota=QuotaDefaults(loadbalancer=2, listener=1))  # type: ignore[operator]
    first = await api.create_lb()
    await api.create_lb(active=False)
    reply = await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET}})
    assert reply.status == 403
    assert reply.fault() == "Quota has been met for resources: Load Balancer"
    other = {"X-Project-Id": "0123456789abcdef0123456789abcdef"}
    await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET}}, headers=other, expect=201)
    await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": first["id"], "protocol": "HTTP", "protocol_port": 80},
    )
    await api.settle(first["id"])
    reply = await api.post(
        "/v2/lbaas/listeners",
        {"listener": {"loadbalancer_id": first["id"], "protocol": "HTTP", "protocol_port": 81}},
    )
    assert reply.status == 403 and reply.fault().endswith("Listener")
    async with api.app[DB].acquire() as conn:
        await conn.execute(
            "INSERT INTO quota_view (project_id, body) VALUES ($1, $2::jsonb)",
            first["project_id"],
            '{"listener": 5, "loadbalancer": null}',
        )
    await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": first["id"], "protocol": "HTTP", "protocol_port": 81},
    )
