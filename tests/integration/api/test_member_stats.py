"""``GET /v2/lbaas/pools/{pool_id}/members/{member_id}/stats`` (a Fulcrum extension): the
member's ``member_stats`` rows summed over amphorae, in the listener stats' shape, readable as
the member itself is (project-scoped, 404 under another pool or project)."""

from __future__ import annotations

from typing import Any

from libs.common.service import DB
from tests.integration.api.conftest import SUBNET, Api, MakeApi

OWN, OTHER = "a" * 32, "b" * 32
ROLES = {
    "reader": {"X-Project-Id": OWN, "X-Roles": "reader"},
    "member": {"X-Project-Id": OWN, "X-Roles": "member"},
    "no-role": {"X-Project-Id": OWN, "X-Roles": ""},
    "other-member": {"X-Project-Id": OTHER, "X-Roles": "member"},
    "admin": {"X-Project-Id": "c" * 32, "X-Roles": "admin"},
}
EXPECTED_STATUS = {"reader": 200, "member": 200, "no-role": 403, "other-member": 404, "admin": 200}
ZEROS = {
    "bytes_in": 0,
    "bytes_out": 0,
    "active_connections": 0,
    "total_connections": 0,
    "request_errors": 0,
}


async def _create(api: Api, lb_id: str, collection: str, key: str, body: dict[str, Any]) -> str:
    reply = await api.post(f"/v2/lbaas/{collection}", {key: body}, headers=ROLES["member"])
    assert reply.status == 201, reply.body
    await api.settle(lb_id)
    return str(reply.body[key]["id"])


async def test_member_stats_sum_amphorae_and_follow_the_member_read_rules(
    make_api: MakeApi,
) -> None:
    api = await make_api(auth_strategy="testing")
    member_headers = ROLES["member"]
    reply = await api.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": SUBNET}},
        headers=member_headers,
        expect=201,
    )
    lb_id = reply.body["loadbalancer"]["id"]
    await api.activate(lb_id)
    listener_id = await _create(
        api,
        lb_id,
        "listeners",
        "listener",
        {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80},
    )
    pools = [
        await _create(
            api,
            lb_id,
            "pools",
            "pool",
            {"listener_id": listener_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
            if n == 0
            else {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
        )
        for n in range(2)
    ]
    member_id = await _create(
        api,
        lb_id,
        f"pools/{pools[0]}/members",
        "member",
        {"address": "127.0.0.9", "protocol_port": 8080},
    )
    path = f"/v2/lbaas/pools/{pools[0]}/members/{member_id}/stats"

    assert (await api.get(path, headers=member_headers, expect=200)).body == {"stats": ZEROS}
    async with api.app[DB].acquire() as conn:
        for amphora, bytes_out in (("a1", 300), ("a2", 200)):
            await conn.execute(
                "INSERT INTO member_stats VALUES ($1, $2, $3, $4, 10, $5, 1, 5, 2)",
                member_id,
                amphora,
                pools[0],
                lb_id,
                bytes_out,
            )
    expected = {
        "bytes_in": 20,
        "bytes_out": 500,
        "active_connections": 2,
        "total_connections": 10,
        "request_errors": 4,
    }
    statuses = {role: await api.get(path, headers=headers) for role, headers in ROLES.items()}
    assert {role: r.status for role, r in statuses.items()} == EXPECTED_STATUS
    assert statuses["reader"].body == {"stats": expected}
    assert statuses["admin"].body == {"stats": expected}
    hidden = statuses["other-member"].body["faultstring"]
    assert hidden == f"Member {member_id} not found."

    # Under another pool the member does not exist; a missing pool is the parent's 404.
    elsewhere = await api.get(
        f"/v2/lbaas/pools/{pools[1]}/members/{member_id}/stats", headers=member_headers
    )
    assert elsewhere.status == 404 and member_id in elsewhere.body["faultstring"]
    missing = "00000000-0000-4000-8000-000000000000"
    no_pool = await api.get(
        f"/v2/lbaas/pools/{missing}/members/{member_id}/stats", headers=member_headers
    )
    assert no_pool.status == 404 and f"Pool {missing} not found." in str(no_pool.body)
    no_member = await api.get(
        f"/v2/lbaas/pools/{pools[0]}/members/{missing}/stats", headers=member_headers
    )
    assert no_member.status == 404

    # The document lists the endpoint.
    document = (await api.get("/openapi.json")).body
    assert "get" in document["paths"]["/v2/lbaas/pools/{pool_id}/members/{member_id}/stats"]
