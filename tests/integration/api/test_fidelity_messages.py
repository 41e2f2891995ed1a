"""Octavia fidelity, validation and conflict texts (octavia-fidelity.md 2.E), admin resource
labels (2.F), the provider's 501 for L7 policies on non-HTTP listeners (2.H) and L7 redirect
sanitising (2.I.1), over raw HTTP."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.api.conftest import SUBNET, Api

LBS = "/v2/lbaas/loadbalancers"
LISTENERS = "/v2/lbaas/listeners"
POOLS = "/v2/lbaas/pools"
POLICIES = "/v2/lbaas/l7policies"
MISSING = "0b4d7c1e-0000-4000-8000-000000000000"


def fault(reply: Any, status: int, text: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    expected = {"faultcode": "Client" if status < 500 else "Server", "faultstring": text}
    assert reply.body == {**expected, "debuginfo": None}


async def http_listener(api: Api, lb_id: str, port: int = 80, protocol: str = "HTTP") -> str:
    body = {"loadbalancer_id": lb_id, "protocol": protocol, "protocol_port": port}
    created = await api.create("listeners", "listener", body)
    await api.settle(lb_id)
    return str(created["id"])


async def pool(api: Api, lb_id: str, **extra: Any) -> str:
    body = {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", **extra}
    created = await api.create("pools", "pool", body)
    await api.settle(lb_id)
    return str(created["id"])


async def test_single_call_pool_definitions(api: Api) -> None:
    def lb(pools: list[Any], default_pool: Any = None) -> dict[str, Any]:
        listener: dict[str, Any] = {"protocol": "HTTP", "protocol_port": 80}
        if default_pool is not None:
            listener["default_pool"] = default_pool
        return {"loadbalancer": {"vip_subnet_id": SUBNET, "listeners": [listener], "pools": pools}}

    full = {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    cases = [
        (lb([full]), "Pools must be named when creating a fully populated loadbalancer."),
        (
            lb([{"name": "a", **full}, {"name": "a", **full}]),
            "Pool names must be unique when creating a fully populated loadbalancer.",
        ),
        (lb([], {"name": "b"}), "Pool 'b' was referenced but no full definition was found."),
        (
            lb([{"name": "c", "lb_algorithm": "ROUND_ROBIN"}]),
            "Pool definition for 'c' missing required attribute: protocol",
        ),
        (
            lb([{"name": "c", "protocol": "HTTP"}]),
            "Pool definition for 'c' missing required attribute: lb_algorithm",
        ),
    ]
    for body, text in cases:
        fault(await api.post(LBS, body), 400, f"Validation failure: {text}")
    members = [{"address": "bad", "protocol_port": 80}]
    reply = await api.post(LBS, lb([{"name": "d", **full, "members": members}]))
    fault(
        reply,
        400,
        "Invalid input for field/attribute address. Value: 'bad'. "
        "Value should be IPv4 or IPv6 format",
    )


async def test_l7_policy_arguments_and_sanitising(api: Api) -> None:
    lb_id = (await api.create_lb())["id"]
    listener_id = await http_listener(api, lb_id)
    target = await pool(api, lb_id)
    base = {"listener_id": listener_id}
    prefix = "Invalid L7 Policy arguments: "
    for body, text in (
        ({"action": "REDIRECT_TO_URL"}, "redirect_url must not be None"),
        ({"action": "REDIRECT_TO_POOL"}, "redirect_pool_id or redirect_pool must not be None"),
        ({"action": "REDIRECT_PREFIX"}, "redirect_prefix must not be None"),
        (
            {
                "action": "REDIRECT_PREFIX",
                "redirect_pool_id": target,
                "redirect_prefix": "http://p",
            },
            "Cannot specify redirect_pool_id and redirect_url or redirect_prefix at the same time",
        ),
    ):
        fault(await api.post(POLICIES, {"l7policy": {**base, **body}}), 400, prefix + text)
    reply = await api.post(
        POLICIES, {"l7policy": {**base, "action": "REDIRECT_TO_URL", "redirect_url": "ftp:x"}}
    )
    fault(
        reply,
        400,
        "Invalid input for field/attribute redirect_url. Value: 'ftp:x'. "
        "Value must be a valid URL string",
    )
    reply = await api.post(POLICIES, {"l7policy": base}, expect=400)
    fault(
        reply,
        400,
        "Invalid input for field/attribute action. Value: 'None'. Mandatory field missing.",
    )

    async def created(body: dict[str, Any]) -> dict[str, Any]:
        reply = await api.post(POLICIES, {"l7policy": {**base, **body}}, expect=201)
        await api.settle(lb_id)
        return dict(reply.body["l7policy"])

    policy = await created(
        {
            "action": "REDIRECT_TO_POOL",
            "redirect_pool_id": target,
            "redirect_url": "http://x.example",
        }
    )
    assert policy["action"] == "REDIRECT_TO_POOL" and policy["redirect_pool_id"] == target
    assert policy["redirect_url"] is None and policy["redirect_http_code"] is None
    policy = await created(
        {
            "action": "REDIRECT_TO_URL",
            "redirect_url": "http://x.example",
            "redirect_pool_id": target,
        }
    )
    assert policy["redirect_pool_id"] is None and policy["redirect_http_code"] == 302
    policy = await created({"action": "REJECT", "redirect_url": "http://x.example"})
    assert policy["action"] == "REJECT" and policy["redirect_url"] is None
    policy = await created({"action": "REJECT", "redirect_prefix": "http://p.example"})
    assert policy["action"] == "REDIRECT_PREFIX" and policy["redirect_http_code"] == 302
    policy = await created(
        {
            "action": "REDIRECT_PREFIX",
            "redirect_prefix": "http://p.example",
            "redirect_url": "http://u.example",
        }
    )
    assert policy["action"] == "REDIRECT_TO_URL" and policy["redirect_prefix"] is None


async def test_l7_rule_errors(api: Api) -> None:
    lb_id = (await api.create_lb())["id"]
    listener_id = await http_listener(api, lb_id)
    policy = await api.create(
        "l7policies", "l7policy", {"listener_id": listener_id, "action": "REJECT"}
    )
    await api.settle(lb_id)
    rules = f"{POLICIES}/{policy['id']}/rules"
    p = "Error parsing L7Rule: "
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"type": "PATH", "compare_type": "EQUAL_TO", "value": ""},
            "Invalid L7 Rule: L7 rule type requires a value",
        ),
        (
            {"type": "HEADER", "compare_type": "EQUAL_TO", "value": "v"},
            "Invalid L7 Rule: L7 rule type requires a key",
        ),
        (
            {"type": "COOKIE", "compare_type": "EQUAL_TO", "key": "a b", "value": "v"},
            "Invalid characters in key",
        ),
        (
            {"type": "FILE_TYPE", "compare_type": "CONTAINS", "value": "jpg"},
            "Invalid L7 Rule: invalid comparison type for rule type",
        ),
        (
            {"type": "PATH", "compare_type": "REGEX", "value": "(unclosed"},
            "Unable to parse regular expression: missing ), unterminated subpattern at position 0",
        ),
        (
            {"type": "HEADER", "compare_type": "EQUAL_TO", "key": "X-A", "value": "a\tb"},
            "Invalid characters in header value",
        ),
        (
            {"type": "COOKIE", "compare_type": "EQUAL_TO", "key": "c", "value": "a;b"},
            "Invalid characters in cookie value",
        ),
        (
            {"type": "PATH", "compare_type": "EQUAL_TO", "value": "/a b"},
            "Invalid characters in comparison value",
        ),
        (
            {"type": "SSL_CONN_HAS_CERT", "compare_type": "EQUAL_TO", "key": "k", "value": "true"},
            'Invalid L7 Rule: L7rule type SSL_CONN_HAS_CERT does not use the "key" field.',
        ),
        (
            {"type": "SSL_CONN_HAS_CERT", "compare_type": "EQUAL_TO", "value": "yes"},
            "Invalid L7 Rule: L7rule value yes is not a boolean True string.",
        ),
        (
            {"type": "SSL_VERIFY_RESULT", "compare_type": "CONTAINS", "value": "1"},
            "Invalid L7 Rule: L7rule type SSL_VERIFY_RESULT only supports the EQUAL_TO "
            "compare type.",
        ),
        (
            {"type": "SSL_VERIFY_RESULT", "compare_type": "EQUAL_TO", "value": "-1"},
            "Invalid L7 Rule: L7rule type SSL_VERIFY_RESULT needs a int value, which is >= 0",
        ),
        (
            {"type": "SSL_DN_FIELD", "compare_type": "EQUAL_TO", "value": "x"},
            "Invalid L7 Rule: L7rule type SSL_DN_FIELD needs to specify a key and a value.",
        ),
        (
            {"type": "SSL_DN_FIELD", "compare_type": "EQUAL_TO", "key": "1bad", "value": "x"},
            "Invalid L7 Rule: Invalid L7rule distinguished name field.",
        ),
    ]
    for body, text in cases:
        fault(await api.post(rules, {"rule": body}), 400, p + text)
    rule = await api.create(
        f"l7policies/{policy['id']}/rules",
        "rule",
        {"type": "PATH", "compare_type": "EQUAL_TO", "value": "/a"},
    )
    await api.settle(lb_id)
    reply = await api.put(f"{rules}/{rule['id']}", {"rule": {"type": "HEADER"}})
    fault(reply, 400, p + "Invalid L7 Rule: L7 rule type requires a key")


async def test_listener_texts(api: Api) -> None:
    lb_id = (await api.create_lb())["id"]
    base = {"loadbalancer_id": lb_id, "protocol_port": 443}
    cases = [
        (
            {"protocol": "TERMINATED_HTTPS"},
            "Validation failure: An SNI or default certificate container reference must be "
            "provided for TERMINATED_HTTPS protocol listeners.",
        ),
        (
            {"protocol": "PROMETHEUS", "sni_container_refs": ["ref"]},
            "Validation failure: An SNI or default certificate container reference must be "
            "provided for PROMETHEUS with TLS protocol listeners.",
        ),
        (
            {"protocol": "PROMETHEUS", "tls_versions": ["TLSv1.2"]},
            "Validation failure: An SNI or default certificate container reference must be "
            "provided for PROMETHEUS with TLS protocol listeners.",
        ),
        (
            {"protocol": "HTTPS", "default_tls_container_ref": "ref"},
            "Validation failure: Certificate container references are not allowed on HTTPS "
            "protocol listeners.",
        ),
        (
            {"protocol": "TCP", "sni_container_refs": ["ref"]},
            "Validation failure: Certificate container references are not allowed on TCP "
            "protocol listeners.",
        ),
        (
            {"protocol": "TCP", "insert_headers": {"X-Forwarded-For": "true"}},
            "insert-headers is not a valid option for a TCP protocol listener.",
        ),
        (
            {"protocol": "HTTP", "insert_headers": {"X-SSL-Client-Verify": "true"}},
            "['X-SSL-Client-Verify'] is not a valid option for HTTP protocol listener.",
        ),
        (
            {"protocol": "HTTP", "insert_headers": {"X-Bogus": "1"}},
            "dict_keys(['X-Bogus']) is not a valid option for insert_headers",
        ),
    ]
    for body, text in cases:
        fault(await api.post(LISTENERS, {"listener": {**base, **body}}), 400, text)
    listener_id = await http_listener(api, lb_id)
    reply = await api.put(
        f"{LISTENERS}/{listener_id}", {"listener": {"insert_headers": {"X-Bogus": "1"}}}
    )
    fault(reply, 400, "['X-Bogus'] is not a valid option for insert_headers")
    reply = await api.put(
        f"{LISTENERS}/{listener_id}", {"listener": {"default_tls_container_ref": "r"}}
    )
    fault(
        reply,
        400,
        "Validation failure: Certificate container references are not allowed on HTTP protocol "
        "listeners.",
    )


async def test_member_and_pool_texts(api: Api) -> None:
    lb_id = (await api.create_lb())["id"]
    reply = await api.post(POOLS, {"pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}})
    fault(
        reply, 400, "Validation failure: Must provide at least one of: loadbalancer_id, listener_id"
    )
    pool_id = await pool(api, lb_id)
    members = f"{POOLS}/{pool_id}/members"
    reply = await api.post(members, {"member": {"address": "169.254.169.254", "protocol_port": 80}})
    fault(reply, 400, "169.254.169.254 is not a valid option for member address")
    reply = await api.put(
        members, {"members": [{"address": "169.254.169.254", "protocol_port": 80}]}
    )
    fault(reply, 400, "169.254.169.254 is not a valid option for member address")
    await api.create(
        f"pools/{pool_id}/members", "member", {"address": "127.0.0.5", "protocol_port": 80}
    )
    await api.settle(lb_id)
    reply = await api.post(members, {"member": {"address": "127.0.0.5", "protocol_port": 80}})
    fault(
        reply, 409, "Another member on this pool is already using ip 127.0.0.5 on protocol_port 80"
    )
    twice = {"members": [{"address": "127.0.0.5", "protocol_port": 80}] * 2}
    fault(
        await api.put(members, twice),
        400,
        "Validation failure: Member must be updated only once in the same request.",
    )
    new_twice = {"members": [{"address": "127.0.0.6", "protocol_port": 80}] * 2}
    fault(
        await api.put(members, new_twice),
        409,
        "Another member on this pool is already using ip 127.0.0.6 on protocol_port 80",
    )


async def test_l7_policy_on_a_non_http_listener_is_the_providers_501(api: Api) -> None:
    lb_id = (await api.create_lb())["id"]
    for protocol, port in (("TCP", 22), ("HTTPS", 443)):
        listener_id = await http_listener(api, lb_id, port, protocol)
        reply = await api.post(
            POLICIES, {"l7policy": {"listener_id": listener_id, "action": "REJECT"}}
        )
        fault(
            reply,
            501,
            "Provider 'amphora' does not support a requested option: "
            f"{protocol} protocol listeners do not support L7 policies",
        )
    reply = await api.get(f"{LBS}/{lb_id}", expect=200)
    assert reply.body["loadbalancer"]["provisioning_status"] == "ACTIVE"


async def test_admin_resource_labels(api: Api) -> None:
    flavor_profiles, flavors = "/v2/lbaas/flavorprofiles", "/v2/lbaas/flavors"
    zone_profiles, zones = "/v2/lbaas/availabilityzoneprofiles", "/v2/lbaas/availabilityzones"
    for path, key, label in (
        (flavor_profiles, "flavorprofile", "Flavor Profile"),
        (flavors, "flavor", "Flavor"),
        (zone_profiles, "availability_zone_profile", "Availability Zone Profile"),
        (zones, "availability_zone", "Availability Zone"),
    ):
        fault(await api.get(f"{path}/{MISSING}"), 404, f"{label} {MISSING} not found.")
        fault(
            await api.put(
                f"{path}/{MISSING}",
                {key: {"description": "d"}}
                if key in ("flavor", "availability_zone")
                else {key: {"name": "n"}},
            ),
            404,
            f"{label} {MISSING} not found.",
        )
        delete_label = "Flavor profile" if key == "flavorprofile" else label
        fault(await api.delete(f"{path}/{MISSING}"), 404, f"{delete_label} {MISSING} not found.")
    fp = (
        await api.post(
            flavor_profiles,
            {"flavorprofile": {"name": "p", "provider_name": "amphora", "flavor_data": "{}"}},
            expect=201,
        )
    ).body["flavorprofile"]
    flavor = (
        await api.post(
            flavors, {"flavor": {"name": "f", "flavor_profile_id": fp["id"]}}, expect=201
        )
    ).body["flavor"]
    fault(
        await api.delete(f"{flavor_profiles}/{fp['id']}"),
        409,
        f"Flavor profile {fp['id']} is in use and cannot be modified.",
    )
    reply = await api.put(
        f"{flavor_profiles}/{fp['id']}",
        {"flavorprofile": {"flavor_data": json.dumps({"loadbalancer_topology": "SINGLE"})}},
    )
    fault(reply, 409, f"Flavor profile {fp['id']} is in use and cannot be modified.")
    await api.create_lb(flavor_id=flavor["id"])
    fault(
        await api.delete(f"{flavors}/{flavor['id']}"),
        409,
        f"Flavor {flavor['id']} is in use and cannot be modified.",
    )
    zp = (
        await api.post(
            zone_profiles,
            {
                "availability_zone_profile": {
                    "name": "zp",
                    "provider_name": "amphora",
                    "availability_zone_data": "{}",
                }
            },
            expect=201,
        )
    ).body["availability_zone_profile"]
    await api.post(
        zones,
        {"availability_zone": {"name": "az1", "availability_zone_profile_id": zp["id"]}},
        expect=201,
    )
    fault(
        await api.delete(f"{zone_profiles}/{zp['id']}"),
        409,
        f"Availability Zone Profile {zp['id']} is in use and cannot be modified.",
    )
    reply = await api.put(
        f"{zone_profiles}/{zp['id']}", {"availability_zone_profile": {"provider_name": "octavia"}}
    )
    fault(reply, 409, f"Availability Zone Profile {zp['id']} is in use and cannot be modified.")
    await api.create_lb(availability_zone="az1")
    fault(
        await api.delete(f"{zones}/az1"),
        409,
        "Availability Zone az1 is in use and cannot be modified.",
    )
