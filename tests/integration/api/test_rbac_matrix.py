"""Octavia's (and, for secrets and containers, Barbican's) default RBAC, table-driven:
endpoint x role x own/other project.

Identities come from the ``testing`` strategy (X-Project-Id, X-Roles), which runs the same
policy code as Keystone tokens. Foreign objects are hidden (404); a known object the caller's
role may not touch, and admin-only endpoints, answer 403. The live event feed shows a caller
its own project's events only (an admin every project's). The dashboard is static files that
read these endpoints with the user's token: its reads (the LB list, status tree and stats,
listener and member stats, the feed) are rows here.
"""

from __future__ import annotations

from typing import Any

from libs.common.secretstore import new_key
from tests.integration.api.conftest import SUBNET, MakeApi
from tests.integration.api.sse import FEED, open_feed

LBS = "/v2/lbaas/loadbalancers"
SECRETS, CONTAINERS = "/v1/secrets", "/v1/containers"
OWN, OTHER = "a" * 32, "b" * 32
ROLES = {
    "reader": {"X-Project-Id": OWN, "X-Roles": "reader"},
    "member": {"X-Project-Id": OWN, "X-Roles": "member"},
    "no-role": {"X-Project-Id": OWN, "X-Roles": ""},
    "other-member": {"X-Project-Id": OTHER, "X-Roles": "member"},
    "other-reader": {"X-Project-Id": OTHER, "X-Roles": "reader"},
    "admin": {"X-Project-Id": "c" * 32, "X-Roles": "admin"},
}
# A read of one object: its project's readers, members and admins; hidden from other projects.
READ_OWN_PROJECT: dict[str, int] = {
    "reader": 200,
    "member": 200,
    "no-role": 403,
    "other-member": 404,
    "other-reader": 404,
    "admin": 200,
}
# (name, method, path template, body, writes) -> expected status per role.
R, W = "read", "write"
MATRIX: list[tuple[str, str, str, Any, dict[str, int]]] = [
    (
        "list lbs",
        "GET",
        LBS,
        None,
        {
            "reader": 200,
            "member": 200,
            "no-role": 403,
            "other-member": 200,
            "other-reader": 200,
            "admin": 200,
        },
    ),
    (
        "show lb",
        "GET",
        LBS + "/{lb}",
        None,
        READ_OWN_PROJECT,
    ),
    (
        "lb status",
        "GET",
        LBS + "/{lb}/status",
        None,
        READ_OWN_PROJECT,
    ),
    (
        "lb stats",
        "GET",
        LBS + "/{lb}/stats",
        None,
        READ_OWN_PROJECT,
    ),
    (
        "update lb",
        "PUT",
        LBS + "/{lb}",
        {"loadbalancer": {"description": "x"}},
        {
            "reader": 403,
            "member": 200,
            "no-role": 403,
            "other-member": 404,
            "other-reader": 404,
            "admin": 200,
        },
    ),
    (
        "failover lb",
        "PUT",
        LBS + "/{lb}/failover",
        None,
        {
            "reader": 403,
            "member": 403,
            "no-role": 403,
            "other-member": 403,
            "other-reader": 403,
            "admin": 202,
        },
    ),
    (
        "show listener",
        "GET",
        "/v2/lbaas/listeners/{listener}",
        None,
        READ_OWN_PROJECT,
    ),
    (
        "update listener",
        "PUT",
        "/v2/lbaas/listeners/{listener}",
        {"listener": {"name": "n"}},
        {
            "reader": 403,
            "member": 200,
            "no-role": 403,
            "other-member": 404,
            "other-reader": 404,
            "admin": 200,
        },
    ),
    (
        "create listener",
        "POST",
        "/v2/lbaas/listeners",
        {"listener": {"loadbalancer_id": "{lb}", "protocol": "TCP", "protocol_port": "{port}"}},
        {
            "reader": 403,
            "member": 201,
            "no-role": 403,
            "other-member": 404,
            "other-reader": 404,
            "admin": 201,
        },
    ),
    # What the dashboard reads besides the LB rows above: its traffic tree.
    *(
        (name, "GET", path, None, READ_OWN_PROJECT)
        for name, path in (
            ("pool show", "/v2/lbaas/pools/{pool}"),
            ("member show", "/v2/lbaas/pools/{pool}/members/{member}"),
            ("listener stats (dashboard)", "/v2/lbaas/listeners/{listener}/stats"),
            ("member stats (dashboard)", "/v2/lbaas/pools/{pool}/members/{member}/stats"),
        )
    ),
    (
        "quota show own",
        "GET",
        "/v2/lbaas/quotas/" + OWN,
        None,
        {
            "reader": 200,
            "member": 200,
            "no-role": 403,
            "other-member": 403,
            "other-reader": 403,
            "admin": 200,
        },
    ),
    (
        "quota update",
        "PUT",
        "/v2/lbaas/quotas/" + OWN,
        {"quota": {"loadbalancer": 50}},
        {
            "reader": 403,
            "member": 403,
            "no-role": 403,
            "other-member": 403,
            "other-reader": 403,
            "admin": 202,
        },
    ),
    (
        "quota list",
        "GET",
        "/v2/lbaas/quotas",
        None,
        {
            "reader": 200,
            "member": 200,
            "no-role": 403,
            "other-member": 200,
            "other-reader": 200,
            "admin": 200,
        },
    ),
    (
        "quota show other",
        "GET",
        "/v2/lbaas/quotas/" + OTHER,
        None,
        {
            "reader": 403,
            "member": 403,
            "no-role": 403,
            "other-member": 200,
            "other-reader": 200,
            "admin": 200,
        },
    ),
    (
        "quota defaults",
        "GET",
        "/v2/lbaas/quotas/defaults",
        None,
        {
            "reader": 200,
            "member": 200,
            "no-role": 403,
            "other-member": 200,
            "other-reader": 200,
            "admin": 200,
        },
    ),
    (
        "quota reset",
        "DELETE",
        "/v2/lbaas/quotas/" + OWN,
        None,
        {
            "reader": 403,
            "member": 403,
            "no-role": 403,
            "other-member": 403,
            "other-reader": 403,
            "admin": 202,
        },
    ),
    (
        "secret list",
        "GET",
        SECRETS,
        None,
        {
            "reader": 200,
            "member": 200,
            "no-role": 403,
            "other-member": 200,
            "other-reader": 200,
            "admin": 200,
        },
    ),
    (
        "secret show",
        "GET",
        SECRETS + "/{secret}",
        None,
        READ_OWN_PROJECT,
    ),
    (
        "secret payload",
        "GET",
        SECRETS + "/{secret}/payload",
        None,
        {
            "reader": 403,
            "member": 200,
            "no-role": 403,
            "other-member": 404,
            "other-reader": 404,
            "admin": 200,
        },
    ),
    (
        "secret create",
        "POST",
        SECRETS,
        {"payload": "p", "payload_content_type": "text/plain"},
        {
            "reader": 403,
            "member": 201,
            "no-role": 403,
            "other-member": 201,
            "other-reader": 403,
            "admin": 201,
        },
    ),
    (
        "container list",
        "GET",
        CONTAINERS,
        None,
        {
            "reader": 200,
            "member": 200,
            "no-role": 403,
            "other-member": 200,
            "other-reader": 200,
            "admin": 200,
        },
    ),
    (
        "container show",
        "GET",
        CONTAINERS + "/{container}",
        None,
        READ_OWN_PROJECT,
    ),
    (
        "container create",
        "POST",
        CONTAINERS,
        {"type": "generic", "secret_refs": [{"name": "s", "secret_ref": "{secret_ref}"}]},
        {
            "reader": 403,
            "member": 201,
            "no-role": 403,
            "other-member": 404,
            "other-reader": 403,
            "admin": 404,
        },
    ),
    (
        "amphora list",
        "GET",
        "/v2/octavia/amphorae",
        None,
        {
            "reader": 403,
            "member": 403,
            "no-role": 403,
            "other-member": 403,
            "other-reader": 403,
            "admin": 200,
        },
    ),
    (
        "flavorprofile list",
        "GET",
        "/v2/lbaas/flavorprofiles",
        None,
        {
            "reader": 403,
            "member": 403,
            "no-role": 403,
            "other-member": 403,
            "other-reader": 403,
            "admin": 200,
        },
    ),
    (
        "flavor list",
        "GET",
        "/v2/lbaas/flavors",
        None,
        {
            "reader": 200,
            "member": 200,
            "no-role": 403,
            "other-member": 200,
            "other-reader": 200,
            "admin": 200,
        },
    ),
    (
        "providers",
        "GET",
        "/v2/lbaas/providers",
        None,
        {
            "reader": 200,
            "member": 200,
            "no-role": 403,
            "other-member": 200,
            "other-reader": 200,
            "admin": 200,
        },
    ),
]


def _fill(value: Any, ids: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    if isinstance(value, str):
        return value.format(**ids)
    return value


async def test_every_endpoint_by_role_and_project(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", secret_keys=new_key())
    member = ROLES["member"]
    lb = (
        await api.post(LBS, {"loadbalancer": {"vip_subnet_id": SUBNET}}, headers=member, expect=201)
    ).body["loadbalancer"]
    await api.activate(lb["id"])
    listener = (
        await api.post(
            "/v2/lbaas/listeners",
            {"listener": {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}},
            headers=member,
            expect=201,
        )
    ).body["listener"]
    await api.settle(lb["id"])
    pool = (
        await api.post(
            "/v2/lbaas/pools",
            {
                "pool": {
                    "listener_id": listener["id"],
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                }
            },
            headers=member,
            expect=201,
        )
    ).body["pool"]
    await api.settle(lb["id"])
    pool_member = (
        await api.post(
            f"/v2/lbaas/pools/{pool['id']}/members",
            {"member": {"address": "198.18.0.10", "protocol_port": 80}},
            headers=member,
            expect=201,
        )
    ).body["member"]
    await api.settle(lb["id"])
    # A payload the client's JSON parsing reads (the payload route answers it as text/plain).
    secret_body = {"payload": "1", "payload_content_type": "text/plain"}
    secret_ref = (await api.post(SECRETS, secret_body, headers=member, expect=201)).body[
        "secret_ref"
    ]
    container_body = {"type": "generic", "secret_refs": [{"name": "s", "secret_ref": secret_ref}]}
    container_ref = (await api.post(CONTAINERS, container_body, headers=member, expect=201)).body[
        "container_ref"
    ]
    port = 1000
    mismatches = []
    for name, method, template, body, expected in MATRIX:
        for role, headers in ROLES.items():
            port += 1
            ids = {
                "lb": lb["id"],
                "listener": listener["id"],
                "pool": pool["id"],
                "member": pool_member["id"],
                "port": port,
                "secret": secret_ref.rsplit("/", 1)[1],
                "secret_ref": secret_ref,
                "container": container_ref.rsplit("/", 1)[1],
            }
            path = template.format(**ids)
            payload = _fill(body, ids) if body is not None else None
            call = {"GET": api.get, "DELETE": api.delete}.get(method)
            if call is not None:
                reply = await call(path, headers=headers)
            else:
                sender = api.put if method == "PUT" else api.post
                reply = await sender(path, payload, headers=headers)
            if reply.status != expected[role]:
                mismatches.append(f"{name} as {role}: {reply.status} != {expected[role]}")
            if reply.status in (200, 201, 202) and method != "GET":
                await api.settle(lb["id"])  # back to ACTIVE for the next write
                if "failover" in name:
                    await api.activate(lb["id"])
    assert not mismatches, "\n".join(mismatches)


# The live event feed per role: the status, and whether the own project's events arrive.
FEED_MATRIX: dict[str, tuple[int, bool]] = {
    "reader": (200, True),
    "member": (200, True),
    "no-role": (403, False),
    "other-member": (200, False),
    "other-reader": (200, False),
    "admin": (200, True),
}


async def test_event_feed_by_role_and_project(make_api: MakeApi) -> None:
    """Another project's token sees none of this project's events, only its own."""
    api = await make_api(auth_strategy="testing")
    lb = (
        await api.post(
            LBS, {"loadbalancer": {"vip_subnet_id": SUBNET}}, headers=ROLES["member"], expect=201
        )
    ).body["loadbalancer"]
    await api.activate(lb["id"])
    other_lb = (
        await api.post(
            LBS,
            {"loadbalancer": {"vip_subnet_id": SUBNET}},
            headers=ROLES["other-member"],
            expect=201,
        )
    ).body["loadbalancer"]
    own_stream, other_stream = f"loadbalancer-{lb['id']}", f"loadbalancer-{other_lb['id']}"
    mismatches = []
    for role, headers in ROLES.items():
        status, sees_own = FEED_MATRIX[role]
        if status != 200:
            reply = await api.get(FEED + "?after=0", headers=headers)
            if reply.status != status:
                mismatches.append(f"feed as {role}: {reply.status} != {status}")
            continue
        async with open_feed(api.session, f"{api.base}{FEED}?after=0", headers) as feed:
            streams = {e.data["stream_id"] for e in await feed.until_silent(0.7)}
        if (own_stream in streams) != sees_own:
            mismatches.append(f"feed as {role}: own project's events seen: {not sees_own}")
        if role.startswith("other") and streams != {other_stream}:
            mismatches.append(f"feed as {role}: streams {streams}")
    assert not mismatches, "\n".join(mismatches)
