"""Load balancer options that must never be accepted and ignored, over raw HTTP:
``vip_qos_policy_id`` (no QoS policy exists here: Octavia's 400), ``vip_sg_ids`` (the groups
must exist; a driver that cannot filter VIPs refuses with 501), and flavors whose topology the
deployment's driver cannot run (400 at LB create, 501 at profile create). Every refusal leaves
nothing written."""

from __future__ import annotations

import json
import uuid
from typing import Any

from libs.common.service import DB
from tests.integration.api.conftest import SUBNET, Api, MakeApi

LBS = "/v2/lbaas/loadbalancers"
GROUPS = "/v2.0/security-groups"
PROFILES = "/v2/lbaas/flavorprofiles"
FLAVORS = "/v2/lbaas/flavors"


async def _lb_count(api: Api) -> int:
    count: int = await api.app[DB].fetchval("SELECT count(*) FROM loadbalancer_view")
    return count


async def _group(api: Api) -> str:
    reply = await api.post(GROUPS, {"security_group": {"name": "vip"}}, expect=201)
    return str(reply.body["security_group"]["id"])


async def test_a_qos_policy_is_refused_as_missing(api: Api) -> None:
    policy = str(uuid.uuid4())
    before = await _lb_count(api)
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "vip_qos_policy_id": policy}}
    reply = await api.post(LBS, body, expect=400)
    assert reply.fault() == f"qos_policy {policy} not found."
    assert await _lb_count(api) == before
    lb = await api.create_lb()
    assert lb["vip_qos_policy_id"] is None
    reply = await api.put(
        f"{LBS}/{lb['id']}", {"loadbalancer": {"vip_qos_policy_id": policy}}, expect=400
    )
    assert reply.fault() == f"qos_policy {policy} not found."
    await api.put(f"{LBS}/{lb['id']}", {"loadbalancer": {"vip_qos_policy_id": None}}, expect=200)


async def test_vip_security_groups_must_exist_and_stay_while_used(api: Api) -> None:
    missing = str(uuid.uuid4())
    before = await _lb_count(api)
    body: dict[str, Any] = {"loadbalancer": {"vip_subnet_id": SUBNET, "vip_sg_ids": [missing]}}
    reply = await api.post(LBS, body, expect=400)
    assert reply.fault() == f"Security Group {missing} not found."
    assert await _lb_count(api) == before

    group = await _group(api)
    lb = await api.create_lb(vip_sg_ids=[group])
    assert lb["vip_sg_ids"] == [group]
    listener = {
        "loadbalancer_id": lb["id"],
        "protocol": "TCP",
        "protocol_port": 22,
        "allowed_cidrs": ["198.18.0.0/24"],
    }
    reply = await api.post("/v2/lbaas/listeners", {"listener": listener}, expect=400)
    assert reply.fault() == (
        "Validation failure: Allowed CIDRs are not allowed when using custom VIP Security Groups."
    )
    reply = await api.delete(f"{GROUPS}/{group}", expect=409)
    assert reply.body == {
        "NeutronError": {
            "type": "SecurityGroupInUse",
            "message": f"Security Group {group} in use.",
            "detail": "",
        }
    }
    reply = await api.put(f"{LBS}/{lb['id']}", {"loadbalancer": {"vip_sg_ids": [missing]}})
    assert reply.status == 400 and reply.fault() == f"Security Group {missing} not found."
    reply = await api.put(f"{LBS}/{lb['id']}", {"loadbalancer": {"vip_sg_ids": None}}, expect=200)
    assert reply.body["loadbalancer"]["vip_sg_ids"] == []
    await api.settle(lb["id"])
    await api.delete(f"{GROUPS}/{group}", expect=204)


async def test_a_process_driver_deployment_refuses_what_it_cannot_honour(
    make_api: MakeApi,
) -> None:
    capable = await make_api()
    api = await make_api(amphora_driver="process")
    group = await _group(api)
    before = await _lb_count(api)
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "vip_sg_ids": [group]}}
    reply = await api.post(LBS, body, expect=501)
    assert reply.fault() == (
        "Provider 'amphora' does not support a requested option: VIP security groups cannot be "
        "enforced by the process amphora driver of this deployment (its amphorae share the "
        "host's network namespace)."
    )
    assert await _lb_count(api) == before
    lb = await api.create_lb()
    reply = await api.put(f"{LBS}/{lb['id']}", {"loadbalancer": {"vip_sg_ids": [group]}})
    assert reply.status == 501, reply.body
    # Validation (400) comes before the provider's refusal (501), as in Octavia.
    missing = str(uuid.uuid4())
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "vip_sg_ids": [missing]}}
    assert (await api.post(LBS, body, expect=400)).fault() == f"Security Group {missing} not found."

    ha = {"loadbalancer_topology": "ACTIVE_STANDBY"}
    profile = {"name": "ha", "provider_name": "amphora", "flavor_data": json.dumps(ha)}
    reply = await api.post(PROFILES, {"flavorprofile": profile}, expect=501)
    assert reply.fault() == (
        "Provider 'amphora' does not support a requested option: The process amphora driver "
        "of this deployment does not support the ACTIVE_STANDBY topology."
    )
    # A flavor made while another driver ran is refused at LB create, before any write.
    made = await capable.post(PROFILES, {"flavorprofile": profile}, expect=201)
    flavor = {
        "name": f"ha-{uuid.uuid4().hex[:6]}",
        "flavor_profile_id": made.body["flavorprofile"]["id"],
    }
    flavor_id = (await capable.post(FLAVORS, {"flavor": flavor}, expect=201)).body["flavor"]["id"]
    before = await _lb_count(api)
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "flavor_id": flavor_id}}
    reply = await api.post(LBS, body, expect=400)
    assert reply.fault() == (
        "Validation failure: The process amphora driver of this deployment does not support "
        "the ACTIVE_STANDBY topology."
    )
    assert await _lb_count(api) == before
    single = {
        "name": "one",
        "provider_name": "amphora",
        "flavor_data": '{"loadbalancer_topology": "SINGLE"}',
    }
    await api.post(PROFILES, {"flavorprofile": single}, expect=201)
