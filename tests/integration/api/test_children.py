"""Listeners, pools, members, health monitors, L7 policies and rules over real HTTP: their
Octavia validation, conflicts (409), cross-LB addressing (404) and batch member updates."""

from __future__ import annotations

from typing import Any

import pytest

from libs.common.secretstore import new_key
from tests.integration.api.conftest import Api, MakeApi
from tests.integration.tls.pki import CertAuthority


async def certificate_container(api: Api) -> str:
    """A certificate container in the key manager (Barbican v1 subset) of ``api``."""
    issued = CertAuthority().issue("web.test", dns=["web.test"])
    refs = {}
    for name, pem in (("certificate", issued.cert_pem), ("private_key", issued.key_pem)):
        body = {"payload": pem.decode(), "payload_content_type": "text/plain"}
        refs[name] = (await api.post("/v1/secrets", body, expect=201)).body["secret_ref"]
    body = {
        "type": "certificate",
        "secret_refs": [{"name": n, "secret_ref": r} for n, r in refs.items()],
    }
    return str((await api.post("/v1/containers", body, expect=201)).body["container_ref"])


LISTENERS = "/v2/lbaas/listeners"
POOLS = "/v2/lbaas/pools"
HMS = "/v2/lbaas/healthmonitors"
POLICIES = "/v2/lbaas/l7policies"


async def listener(
    api: Api, lb_id: str, port: int = 80, protocol: str = "HTTP", **extra: Any
) -> dict[str, Any]:
    body = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb_id, "protocol": protocol, "protocol_port": port, **extra},
    )
    await api.settle(lb_id)
    return body


async def pool(api: Api, lb_id: str, protocol: str = "HTTP", **extra: Any) -> dict[str, Any]:
    fields = {"protocol": protocol, "lb_algorithm": "ROUND_ROBIN", **extra}
    if "listener_id" not in fields:
        fields["loadbalancer_id"] = lb_id
    body = await api.create("pools", "pool", fields)
    await api.settle(lb_id)
    return body


async def test_listener_crud_and_validation(make_api: MakeApi) -> None:
    api = await make_api(secret_keys=new_key())  # TERMINATED_HTTPS needs the key manager
    lb = await api.create_lb()
    li = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80, "name": "web"},
    )
    assert li["provisioning_status"] == "PENDING_CREATE"
    assert li["loadbalancers"] == [{"id": lb["id"]}]
    assert li["connection_limit"] == -1 and li["timeout_client_data"] == 50000
    await api.settle(lb["id"])
    lb_body = (await api.get(f"/v2/lbaas/loadbalancers/{lb['id']}", expect=200)).body[
        "loadbalancer"
    ]
    assert lb_body["listeners"] == [{"id": li["id"]}] and lb_body["provisioning_status"] == "ACTIVE"
    path = f"{LISTENERS}/{li['id']}"
    reply = await api.put(
        path,
        {
            "listener": {
                "connection_limit": 100,
                "timeout_client_data": 1000,
                "insert_headers": {"X-Forwarded-For": "true"},
            }
        },
        expect=200,
    )
    assert reply.body["listener"]["connection_limit"] == 100
    await api.settle(lb["id"])
    reply = await api.put(
        path, {"listener": {"connection_limit": None, "timeout_client_data": None}}, expect=200
    )
    assert reply.body["listener"]["connection_limit"] == -1
    assert reply.body["listener"]["timeout_client_data"] == 50000
    await api.settle(lb["id"])
    for immutable in ({"protocol": "TCP"}, {"protocol_port": 81}, {"loadbalancer_id": lb["id"]}):
        assert (await api.put(path, {"listener": immutable})).status == 400
    base = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 81}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "protocol": "QUIC"}, 400, "protocol"),
        ({**base, "protocol_port": 0}, 400, "protocol_port"),
        ({**base, "protocol_port": 65536}, 400, "protocol_port"),
        ({**base, "connection_limit": -2}, 400, "connection_limit"),
        ({**base, "timeout_client_data": 2073600001}, 400, "timeout_client_data"),
        ({**base, "colour": 1}, 400, "colour"),
        ({**base, "protocol_port": 80}, 409, "protocol_port 80"),
        ({**base, "protocol": "TCP", "protocol_port": 80}, 409, "80"),
        ({**base, "protocol": "UDP"}, 501, "UDP"),
        ({**base, "protocol": "TERMINATED_HTTPS"}, 400, "certificate"),
        ({**base, "default_tls_container_ref": "ref"}, 400, "not allowed on HTTP protocol"),
        (
            {**base, "protocol": "TCP", "insert_headers": {"X-Forwarded-For": "true"}},
            400,
            "insert-headers is not a valid option for a TCP protocol listener.",
        ),
        ({**base, "insert_headers": {"X-Evil": "1"}}, 400, "X-Evil"),
        ({**base, "allowed_cidrs": ["::/0"]}, 400, "IP version"),
        ({**base, "allowed_cidrs": ["not-a-cidr"]}, 400, "allowed_cidrs"),
        ({**base, "loadbalancer_id": "00000000-0000-4000-8000-000000000000"}, 404, "not found"),
        ({**base, "loadbalancer_id": "nope"}, 400, "loadbalancer_id"),
        ({**base, "default_pool_id": "00000000-0000-4000-8000-000000000000"}, 404, "Pool"),
    ]
    for body, status, fragment in cases:
        reply = await api.post(LISTENERS, {"listener": body})
        assert reply.status == status, (body, reply.body)
        assert fragment in reply.fault(), (body, reply.body)
    terminated = {**base, "protocol": "TERMINATED_HTTPS", "protocol_port": 443}
    reply = await api.post(
        LISTENERS, {"listener": {**terminated, "default_tls_container_ref": "x"}}
    )
    assert reply.status == 400 and "default_tls_container_ref" in reply.fault()
    tls = await api.create(
        "listeners",
        "listener",
        {**terminated, "default_tls_container_ref": await certificate_container(api)},
    )
    assert tls["tls_versions"] == ["TLSv1.2", "TLSv1.3"]
    await api.settle(lb["id"])
    await api.delete(f"{LISTENERS}/{tls['id']}", expect=204)
    gone = await api.get(f"{LISTENERS}/{tls['id']}", expect=200)
    assert gone.body["listener"]["provisioning_status"] == "PENDING_DELETE"
    await api.settle(lb["id"])
    await api.get(f"{LISTENERS}/{tls['id']}", expect=404)


async def test_pools_default_pool_and_session_persistence(api: Api) -> None:
    lb = await api.create_lb()
    li = await listener(api, lb["id"])
    p = await pool(
        api,
        lb["id"],
        listener_id=li["id"],
        session_persistence={"type": "APP_COOKIE", "cookie_name": "sid"},
    )
    assert p["listeners"] == [{"id": li["id"]}] and p["loadbalancers"] == [{"id": lb["id"]}]
    assert p["session_persistence"]["cookie_name"] == "sid"
    shown = await api.get(f"{LISTENERS}/{li['id']}", expect=200)
    assert shown.body["listener"]["default_pool_id"] == p["id"]
    reply = await api.post(
        POOLS,
        {"pool": {"listener_id": li["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}},
    )
    assert reply.status == 409
    base = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    cases: list[tuple[dict[str, Any], int]] = [
        ({**base, "lb_algorithm": "RANDOM"}, 400),
        ({**base, "session_persistence": {"type": "APP_COOKIE"}}, 400),
        ({**base, "session_persistence": {"type": "HTTP_COOKIE", "cookie_name": "x"}}, 400),
        ({**base, "session_persistence": {"type": "APP_COOKIE", "cookie_name": "a b"}}, 400),
        ({**base, "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 5}}, 400),
        ({**base, "protocol": "UDP"}, 501),
        ({"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}, 400),
        ({**base, "crl_container_ref": "crl"}, 400),
    ]
    for body, status in cases:
        reply = await api.post(POOLS, {"pool": body})
        assert reply.status == status, (body, reply.body)
    tcp = await listener(api, lb["id"], port=22, protocol="TCP")
    reply = await api.post(
        POOLS,
        {"pool": {"listener_id": tcp["id"], "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}},
    )
    # The protocol mismatch (400) comes before the provider's refusal of UDP (501).
    assert reply.status == 400
    assert reply.fault() == (
        "Validation failure: The pool protocol 'UDP' is invalid while the listener protocol "
        "is 'TCP'."
    )
    hashed = await pool(api, lb["id"], lb_algorithm="SOURCE_IP_PORT")
    assert hashed["lb_algorithm"] == "SOURCE_IP_PORT"
    reply = await api.put(
        f"{POOLS}/{p['id']}",
        {"pool": {"lb_algorithm": "LEAST_CONNECTIONS", "session_persistence": None}},
        expect=200,
    )
    assert reply.body["pool"]["session_persistence"] is None
    await api.settle(lb["id"])
    assert (await api.put(f"{POOLS}/{p['id']}", {"pool": {"protocol": "TCP"}})).status == 400
    await api.delete(f"{POOLS}/{p['id']}", expect=204)
    await api.settle(lb["id"])
    shown = await api.get(f"{LISTENERS}/{li['id']}", expect=200)
    assert shown.body["listener"]["default_pool_id"] is None


async def test_members_crud_duplicates_and_cross_pool_addressing(api: Api) -> None:
    lb = await api.create_lb()
    p = await pool(api, lb["id"])
    members = f"{POOLS}/{p['id']}/members"
    m = await api.create(
        f"pools/{p['id']}/members",
        "member",
        {
            "address": "127.0.0.9",
            "protocol_port": 8080,
            "subnet_id": "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51",
        },
    )
    assert m["weight"] == 1 and m["backup"] is False and m["operating_status"] == "NO_MONITOR"
    await api.settle(lb["id"])
    reply = await api.post(members, {"member": {"address": "127.0.0.9", "protocol_port": 8080}})
    assert reply.status == 409 and "127.0.0.9" in reply.fault()
    cases: list[tuple[dict[str, Any], int]] = [
        ({"address": "169.254.169.254", "protocol_port": 80}, 400),
        ({"address": "not-an-ip", "protocol_port": 80}, 400),
        ({"address": "127.0.0.1", "protocol_port": 80, "weight": 257}, 400),
        ({"address": "127.0.0.1", "protocol_port": 80, "subnet_id": "missing"}, 400),
        ({"address": "127.0.0.1", "protocol_port": 80, "monitor_port": 0}, 400),
        ({"address": "127.0.0.1"}, 400),
    ]
    for body, status in cases:
        reply = await api.post(members, {"member": body})
        assert reply.status == status, (body, reply.body)
    reply = await api.put(
        f"{members}/{m['id']}", {"member": {"weight": 0, "name": "drain"}}, expect=200
    )
    assert reply.body["member"]["weight"] == 0
    await api.settle(lb["id"])
    assert (
        await api.put(f"{members}/{m['id']}", {"member": {"address": "127.0.0.2"}})
    ).status == 400
    other_lb = await api.create_lb()
    other = await pool(api, other_lb["id"])
    await api.get(f"{POOLS}/{other['id']}/members/{m['id']}", expect=404)
    await api.put(f"{POOLS}/{other['id']}/members/{m['id']}", {"member": {"weight": 3}}, expect=404)
    await api.delete(f"{POOLS}/{other['id']}/members/{m['id']}", expect=404)
    listed = await api.get(members, expect=200)
    assert [x["id"] for x in listed.body["members"]] == [m["id"]]
    assert (await api.get(f"{POOLS}/{other['id']}/members", expect=200)).body["members"] == []
    await api.get(f"{POOLS}/00000000-0000-4000-8000-000000000000/members", expect=404)
    await api.delete(f"{members}/{m['id']}", expect=204)
    await api.settle(lb["id"])
    await api.get(f"{members}/{m['id']}", expect=404)


@pytest.mark.parametrize("additive", [False, True])
async def test_batch_member_update(api: Api, additive: bool) -> None:
    lb = await api.create_lb()
    p = await pool(api, lb["id"])
    members = f"{POOLS}/{p['id']}/members"
    keep = await api.create(
        f"pools/{p['id']}/members", "member", {"address": "127.0.0.1", "protocol_port": 80}
    )
    await api.settle(lb["id"])
    drop = await api.create(
        f"pools/{p['id']}/members", "member", {"address": "127.0.0.2", "protocol_port": 80}
    )
    await api.settle(lb["id"])
    batch = {
        "members": [
            {"address": "127.0.0.1", "protocol_port": 80, "weight": 7},
            {"address": "127.0.0.3", "protocol_port": 80},
        ]
    }
    query = "?additive_only=true" if additive else ""
    reply = await api.put(members + query, batch, expect=202)
    assert reply.body is None
    listed = {m["address"]: m for m in (await api.get(members, expect=200)).body["members"]}
    assert listed["127.0.0.1"]["id"] == keep["id"] and listed["127.0.0.1"]["weight"] == 7
    assert listed["127.0.0.1"]["provisioning_status"] == "PENDING_UPDATE"
    assert listed["127.0.0.3"]["provisioning_status"] == "PENDING_CREATE"
    expected_drop = "ACTIVE" if additive else "PENDING_DELETE"
    assert listed["127.0.0.2"]["provisioning_status"] == expected_drop
    await api.settle(lb["id"])
    after = {m["address"] for m in (await api.get(members, expect=200)).body["members"]}
    assert after == (
        {"127.0.0.1", "127.0.0.2", "127.0.0.3"} if additive else {"127.0.0.1", "127.0.0.3"}
    )
    assert drop["id"]
    # Two identical new entries: the second insert is the duplicate (409); an existing
    # member matched twice is a 400.
    dup = {"members": [{"address": "127.0.0.9", "protocol_port": 80}] * 2}
    reply = await api.put(members, dup, expect=409)
    assert reply.fault() == (
        "Another member on this pool is already using ip 127.0.0.9 on protocol_port 80"
    )
    dup = {"members": [{"address": "127.0.0.1", "protocol_port": 80}] * 2}
    reply = await api.put(members, dup, expect=400)
    assert reply.fault() == (
        "Validation failure: Member must be updated only once in the same request."
    )
    assert (
        await api.put(members, {"members": [{"address": "x", "protocol_port": 80}]})
    ).status == 400
    assert (await api.put(members, {"member": []})).status == 400


async def test_health_monitors(api: Api) -> None:
    lb = await api.create_lb()
    p = await pool(api, lb["id"])
    base = {"pool_id": p["id"], "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 3}
    cases: list[tuple[dict[str, Any], int]] = [
        ({**base, "max_retries": 11}, 400),
        ({**base, "max_retries": 0}, 400),
        ({**base, "delay": -1}, 400),
        ({**base, "url_path": "no-slash"}, 400),
        ({**base, "expected_codes": "2xx"}, 400),
        ({**base, "http_method": "FETCH"}, 400),
        ({**base, "domain_name": "example.com"}, 400),
        ({**base, "type": "TCP", "url_path": "/"}, 400),
        ({**base, "type": "TCP", "http_method": "GET"}, 400),
        ({**base, "type": "UDP-CONNECT"}, 400),
        ({**base, "type": "BOGUS"}, 400),
    ]
    for body, status in cases:
        reply = await api.post(HMS, {"healthmonitor": body})
        assert reply.status == status, (body, reply.body)
    hm = await api.create(
        "healthmonitors",
        "healthmonitor",
        {**base, "expected_codes": "200-204", "http_version": 1.1, "domain_name": "example.com"},
    )
    assert hm["http_method"] == "GET" and hm["url_path"] == "/" and hm["max_retries_down"] == 3
    assert hm["pools"] == [{"id": p["id"]}]
    await api.settle(lb["id"])
    reply = await api.post(HMS, {"healthmonitor": {**base, "type": "TCP"}})
    assert reply.status == 409
    reply = await api.put(
        f"{HMS}/{hm['id']}", {"healthmonitor": {"delay": 10, "url_path": None}}, expect=200
    )
    assert (
        reply.body["healthmonitor"]["delay"] == 10
        and reply.body["healthmonitor"]["url_path"] == "/"
    )
    await api.settle(lb["id"])
    assert (await api.put(f"{HMS}/{hm['id']}", {"healthmonitor": {"type": "TCP"}})).status == 400
    assert (
        await api.put(f"{HMS}/{hm['id']}", {"healthmonitor": {"pool_id": p["id"]}})
    ).status == 400
    await api.delete(f"{HMS}/{hm['id']}", expect=204)
    await api.settle(lb["id"])
    await api.get(f"{HMS}/{hm['id']}", expect=404)
    tcp = await api.create("healthmonitors", "healthmonitor", {**base, "type": "TCP"})
    assert tcp["http_method"] is None and tcp["url_path"] is None


async def test_l7_policies_positions_and_actions(api: Api) -> None:
    lb = await api.create_lb()
    li = await listener(api, lb["id"])
    target = await pool(api, lb["id"])

    async def policy(**fields: Any) -> dict[str, Any]:
        body = await api.create("l7policies", "l7policy", {"listener_id": li["id"], **fields})
        await api.settle(lb["id"])
        return body

    first = await policy(action="REJECT", name="first")
    second = await policy(
        action="REDIRECT_TO_URL", redirect_url="https://example.com/", name="second"
    )
    assert second["redirect_http_code"] == 302 and second["position"] == 2
    front = await policy(
        action="REDIRECT_TO_POOL", redirect_pool_id=target["id"], position=1, name="front"
    )
    order = await api.get(f"{POLICIES}?listener_id={li['id']}&sort=position:asc", expect=200)
    assert [(p["name"], p["position"]) for p in order.body["l7policies"]] == [
        ("front", 1),
        ("first", 2),
        ("second", 3),
    ]
    shown = await api.get(f"{LISTENERS}/{li['id']}", expect=200)
    assert shown.body["listener"]["l7policies"] == [
        {"id": front["id"]},
        {"id": first["id"]},
        {"id": second["id"]},
    ]
    await api.put(f"{POLICIES}/{second['id']}", {"l7policy": {"position": 1}}, expect=200)
    await api.settle(lb["id"])
    order = await api.get(f"{POLICIES}?sort=position", expect=200)
    assert [p["name"] for p in order.body["l7policies"]] == ["second", "front", "first"]
    reply = await api.put(
        f"{POLICIES}/{first['id']}",
        {"l7policy": {"redirect_prefix": "https://x.example"}},
        expect=200,
    )
    assert reply.body["l7policy"]["action"] == "REDIRECT_PREFIX"
    await api.settle(lb["id"])
    await api.delete(f"{POLICIES}/{front['id']}", expect=204)
    await api.settle(lb["id"])
    order = await api.get(f"{POLICIES}?sort=position", expect=200)
    assert [(p["name"], p["position"]) for p in order.body["l7policies"]] == [
        ("second", 1),
        ("first", 2),
    ]
    base = {"listener_id": li["id"]}
    cases: list[tuple[dict[str, Any], int]] = [
        ({**base, "action": "REDIRECT_TO_URL"}, 400),
        ({**base, "action": "REDIRECT_TO_URL", "redirect_url": "ftp://x"}, 400),
        ({**base, "action": "REDIRECT_TO_POOL"}, 400),
        (
            {
                **base,
                "action": "REDIRECT_TO_POOL",
                "redirect_pool_id": target["id"],
                "redirect_prefix": "http://x.example",
            },
            400,
        ),
        ({**base, "action": "REJECT", "position": 0}, 400),
        (
            {
                **base,
                "action": "REDIRECT_TO_URL",
                "redirect_url": "http://a.example",
                "redirect_http_code": 305,
            },
            400,
        ),
        ({**base, "action": "JUMP"}, 400),
    ]
    for body, status in cases:
        reply = await api.post(POLICIES, {"l7policy": body})
        assert reply.status == status, (body, reply.body)
    tcp = await listener(api, lb["id"], port=22, protocol="TCP")
    assert (
        await api.post(POLICIES, {"l7policy": {"listener_id": tcp["id"], "action": "REJECT"}})
    ).status == 501
    reply = await api.delete(f"{POOLS}/{target['id']}")
    assert reply.status == 204  # the policy that used it was deleted
    await api.settle(lb["id"])
    holder = await pool(api, lb["id"])
    await policy(action="REDIRECT_TO_POOL", redirect_pool_id=holder["id"])
    assert (await api.delete(f"{POOLS}/{holder['id']}")).status == 409


async def test_l7_rules(api: Api) -> None:
    lb = await api.create_lb()
    li = await listener(api, lb["id"])
    pol = await api.create("l7policies", "l7policy", {"listener_id": li["id"], "action": "REJECT"})
    await api.settle(lb["id"])
    rules = f"{POLICIES}/{pol['id']}/rules"
    reply = await api.post(
        rules, {"rule": {"type": "PATH", "compare_type": "REGEX", "value": "^/api/.*$"}}, expect=201
    )
    rule = reply.body["rule"]
    assert rule["invert"] is False and rule["key"] is None
    await api.settle(lb["id"])
    listed = await api.get(rules, expect=200)
    assert [r["id"] for r in listed.body["rules"]] == [rule["id"]] and listed.body[
        "rules_links"
    ] == []
    shown = await api.get(f"{rules}/{rule['id']}", expect=200)
    assert shown.body["rule"]["value"] == "^/api/.*$"
    assert (await api.get(f"{POLICIES}/{pol['id']}", expect=200)).body["l7policy"]["rules"] == [
        {"id": rule["id"]}
    ]
    cases: list[dict[str, Any]] = [
        {"type": "PATH", "compare_type": "REGEX", "value": "(["},
        {"type": "HEADER", "compare_type": "EQUAL_TO", "value": "x"},
        {"type": "HEADER", "compare_type": "EQUAL_TO", "key": "bad key", "value": "x"},
        {"type": "COOKIE", "compare_type": "EQUAL_TO", "key": "sid", "value": "a;b"},
        {"type": "FILE_TYPE", "compare_type": "CONTAINS", "value": "jpg"},
        {"type": "SSL_CONN_HAS_CERT", "compare_type": "EQUAL_TO", "value": "false"},
        {"type": "SSL_VERIFY_RESULT", "compare_type": "EQUAL_TO", "value": "-1"},
        {"type": "SSL_DN_FIELD", "compare_type": "EQUAL_TO", "key": "1CN", "value": "x"},
        {"type": "HOST_NAME", "compare_type": "EQUAL_TO", "value": "has space"},
        {"type": "PATH", "compare_type": "EQUAL_TO", "value": "x" * 256},
        {"type": "PATH", "compare_type": "EQUAL_TO"},
    ]
    for body in cases:
        reply = await api.post(rules, {"rule": body})
        assert reply.status == 400, (body, reply.body)
    reply = await api.put(
        f"{rules}/{rule['id']}",
        {"rule": {"compare_type": "STARTS_WITH", "value": "/v2", "invert": True}},
        expect=200,
    )
    assert reply.body["rule"]["invert"] is True
    await api.settle(lb["id"])
    assert (await api.put(f"{rules}/{rule['id']}", {"rule": {"value": "has space"}})).status == 400
    assert (
        await api.put(f"{rules}/{rule['id']}", {"rule": {"compare_type": "REGEX", "value": "(["}})
    ).status == 400
    other = await api.create(
        "l7policies", "l7policy", {"listener_id": li["id"], "action": "REJECT"}
    )
    await api.settle(lb["id"])
    await api.get(f"{POLICIES}/{other['id']}/rules/{rule['id']}", expect=404)
    await api.delete(f"{rules}/{rule['id']}", expect=204)
    await api.settle(lb["id"])
    await api.get(f"{rules}/{rule['id']}", expect=404)
