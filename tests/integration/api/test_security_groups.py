"""The Neutron security-group subset over raw HTTP: CRUD, the default egress rules, filters,
project scoping, Neutron's validation and its error body, and the group's event stream."""

from __future__ import annotations

import uuid
from typing import Any

from libs.common.eventstore import PostgresEventStore
from libs.common.service import DB
from tests.integration.api.conftest import Api, MakeApi

GROUPS = "/v2.0/security-groups"
RULES = "/v2.0/security-group-rules"


def neutron_error(body: Any) -> tuple[str, str]:
    assert isinstance(body, dict) and set(body) == {"NeutronError"}, body
    error = body["NeutronError"]
    assert set(error) == {"type", "message", "detail"} and error["detail"] == "", error
    return str(error["type"]), str(error["message"])


async def group(api: Api, name: str = "web", **extra: Any) -> dict[str, Any]:
    reply = await api.post(GROUPS, {"security_group": {"name": name, **extra}}, expect=201)
    return dict(reply.body["security_group"])


async def rule(api: Api, group_id: str, **fields: Any) -> dict[str, Any]:
    body = {"security_group_id": group_id, "direction": "ingress", **fields}
    reply = await api.post(RULES, {"security_group_rule": body}, expect=201)
    return dict(reply.body["security_group_rule"])


async def test_group_crud_with_neutron_bodies_and_default_egress_rules(api: Api) -> None:
    created = await group(api, "web", description="front")
    assert set(created) == {
        "id",
        "name",
        "stateful",
        "tenant_id",
        "project_id",
        "description",
        "shared",
        "security_group_rules",
        "tags",
        "created_at",
        "updated_at",
        "revision_number",
    }
    assert created["name"] == "web" and created["description"] == "front"
    assert created["stateful"] is True and created["tenant_id"] == created["project_id"]
    assert created["created_at"].endswith("Z")
    defaults = created["security_group_rules"]
    assert sorted(r["ethertype"] for r in defaults) == ["IPv4", "IPv6"]
    for r in defaults:
        assert r["direction"] == "egress" and r["protocol"] is None
        assert r["remote_ip_prefix"] is None and r["port_range_min"] is None
        assert r["security_group_id"] == created["id"]
    one = f"{GROUPS}/{created['id']}"
    assert (await api.get(one, expect=200)).body == {"security_group": created}
    assert (await api.get(f"{one}?fields=id&fields=name", expect=200)).body == {
        "security_group": {"id": created["id"], "name": "web"}
    }
    listed = (await api.get(f"{GROUPS}?name=web&id={created['id']}", expect=200)).body
    assert listed == {"security_groups": [created]}
    # Under /v2 too, as Neutron's other collections.
    listed = (await api.get(f"/v2/security-groups?id={created['id']}", expect=200)).body
    assert listed == {"security_groups": [created]}
    assert (await api.get(f"{GROUPS}?name=nothing-like-it", expect=200)).body == {
        "security_groups": []
    }
    updated = (await api.put(one, {"security_group": {"name": "web2"}}, expect=200)).body
    assert updated["security_group"]["name"] == "web2"
    assert updated["security_group"]["revision_number"] == created["revision_number"] + 1

    await api.delete(one, expect=204)
    reply = await api.get(one, expect=404)
    assert neutron_error(reply.body) == (
        "SecurityGroupNotFound",
        f"Security group {created['id']} does not exist",
    )
    reply = await api.delete(one, expect=404)
    assert neutron_error(reply.body)[0] == "SecurityGroupNotFound"
    events = await PostgresEventStore(api.app[DB]).read_stream(f"securitygroup-{created['id']}")
    assert [e.event_type for e in events] == [
        "SecurityGroupCreated",
        "SecurityGroupUpdated",
        "SecurityGroupDeleted",
    ]


async def test_rules_crud_filters_and_duplicates(api: Api) -> None:
    sg = await group(api)
    web = await rule(
        api,
        sg["id"],
        protocol="TCP",
        port_range_min=80,
        port_range_max=81,
        remote_ip_prefix="198.18.5.7",
    )
    assert web["protocol"] == "tcp" and web["ethertype"] == "IPv4"
    assert web["remote_ip_prefix"] == "198.18.5.7/32"
    assert web["normalized_cidr"] == "198.18.5.7/32"
    assert (web["port_range_min"], web["port_range_max"]) == (80, 81)
    everything = await rule(api, sg["id"], protocol="udp", port_range_min=1, port_range_max=65535)
    assert everything["port_range_min"] is None and everything["port_range_max"] is None
    one = f"{RULES}/{web['id']}"
    assert (await api.get(one, expect=200)).body == {"security_group_rule": web}
    shown = (await api.get(f"{GROUPS}/{sg['id']}", expect=200)).body["security_group"]
    assert {r["id"] for r in shown["security_group_rules"]} >= {web["id"], everything["id"]}
    listed = (await api.get(f"{RULES}?security_group_id={sg['id']}&direction=ingress")).body
    assert sorted(r["id"] for r in listed["security_group_rules"]) == sorted(
        [web["id"], everything["id"]]
    )

    body = {
        "security_group_id": sg["id"],
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": 80,
        "port_range_max": 81,
        "remote_ip_prefix": "198.18.5.7/32",
    }
    reply = await api.post(RULES, {"security_group_rule": body}, expect=409)
    assert neutron_error(reply.body) == (
        "SecurityGroupRuleExists",
        f"Security group rule already exists. Rule id is {web['id']}.",
    )
    await api.delete(one, expect=204)
    reply = await api.get(one, expect=404)
    assert neutron_error(reply.body) == (
        "SecurityGroupRuleNotFound",
        f"Security group rule {web['id']} does not exist",
    )
    await api.post(RULES, {"security_group_rule": body}, expect=201)


async def test_rule_validation_in_neutron_words(api: Api) -> None:
    sg = await group(api)
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        (
            {"protocol": "tcp", "port_range_min": 90, "port_range_max": 80},
            400,
            "SecurityGroupInvalidPortRange",
            "For TCP/UDP protocols, port_range_min must be <= port_range_max",
        ),
        (
            {"port_range_min": 80, "port_range_max": 80},
            400,
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        ),
        (
            {"protocol": "tcp", "port_range_min": 70000, "port_range_max": 70000},
            400,
            "SecurityGroupInvalidPortValue",
            "Invalid value for port 70000",
        ),
        (
            {"protocol": "gre", "port_range_min": 1, "port_range_max": 2},
            400,
            "SecurityGroupInvalidProtocolForPort",
            "Ports cannot be specified for protocol 47. Ports are only supported for "
            "DCCP, SCTP, TCP, UDP.",
        ),
        (
            {"remote_ip_prefix": "2001:db8::/64"},
            400,
            "SecurityGroupRuleParameterConflict",
            "Conflicting value ethertype IPv4 for CIDR 2001:db8::/64",
        ),
        (
            {"ethertype": "IPv5"},
            400,
            "SecurityGroupRuleInvalidEtherType",
            "Security group rule for ethertype 'IPv5' not supported. Allowed values are "
            "['IPv4', 'IPv6'].",
        ),
        (
            {"remote_ip_prefix": "198.18.0.0/24", "remote_group_id": sg["id"]},
            400,
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may "
            "be provided.",
        ),
        (
            {"direction": "sideways"},
            400,
            "HTTPBadRequest",
            "Invalid input for direction. Reason: 'sideways' is not in ['ingress', 'egress'].",
        ),
    ]
    for fields, status, kind, message in cases:
        body = {"security_group_id": sg["id"], "direction": "ingress", **fields}
        reply = await api.post(RULES, {"security_group_rule": body}, expect=status)
        assert neutron_error(reply.body) == (kind, message), fields
    reply = await api.post(RULES, {"security_group_rule": {"protocol": "chess"}}, expect=400)
    assert neutron_error(reply.body) == (
        "HTTPBadRequest",
        "Failed to parse request. Required attribute 'security_group_id' not specified",
    )
    missing = str(uuid.uuid4())
    body = {"security_group_id": missing, "direction": "ingress"}
    reply = await api.post(RULES, {"security_group_rule": body}, expect=404)
    assert neutron_error(reply.body) == (
        "SecurityGroupNotFound",
        f"Security group {missing} does not exist",
    )
    reply = await api.post(GROUPS, {"security_group": {"name": "default"}}, expect=409)
    assert neutron_error(reply.body) == (
        "SecurityGroupDefaultAlreadyExists",
        "Default security group already exists.",
    )


async def test_groups_are_project_scoped(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    mine = {"X-Project-Id": "a" * 32, "X-Roles": "member"}
    theirs = {"X-Project-Id": "b" * 32, "X-Roles": "member"}
    reply = await api.call(
        "POST", GROUPS, {"security_group": {"name": "private"}}, headers=mine, expect=201
    )
    sg = reply.body["security_group"]
    assert sg["project_id"] == "a" * 32
    await api.call("GET", f"{GROUPS}/{sg['id']}", headers=mine, expect=200)
    reply = await api.call("GET", f"{GROUPS}/{sg['id']}", headers=theirs, expect=404)
    assert neutron_error(reply.body)[0] == "SecurityGroupNotFound"
    listed = (await api.call("GET", GROUPS, headers=theirs, expect=200)).body
    assert sg["id"] not in [g["id"] for g in listed["security_groups"]]
    listed = (await api.call("GET", RULES, headers=theirs, expect=200)).body
    assert sg["id"] not in [r["security_group_id"] for r in listed["security_group_rules"]]
    body = {"security_group_id": sg["id"], "direction": "ingress"}
    reply = await api.call("POST", RULES, {"security_group_rule": body}, headers=theirs, expect=404)
    await api.call("DELETE", f"{GROUPS}/{sg['id']}", headers=theirs, expect=404)
    await api.call("DELETE", f"{GROUPS}/{sg['id']}", headers=mine, expect=204)
