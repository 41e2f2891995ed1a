"""Providers and their flavor / availability zone capabilities over real HTTP."""

from __future__ import annotations

from tests.integration.api.conftest import Api, MakeApi

PROVIDERS = "/v2/lbaas/providers"


async def test_providers_list(api: Api) -> None:
    reply = await api.get(PROVIDERS, expect=200)
    assert reply.body == {
        "providers": [
            {"name": "amphora", "description": "The Octavia Amphora driver."},
            {"name": "octavia", "description": "Deprecated alias of the Octavia Amphora driver."},
        ]
    }
    reply = await api.get("/v2.0/providers?fields=name", expect=200)
    assert reply.body == {"providers": [{"name": "amphora"}, {"name": "octavia"}]}


async def test_capabilities(api: Api) -> None:
    reply = await api.get(f"{PROVIDERS}/amphora/flavor_capabilities", expect=200)
    names = [c["name"] for c in reply.body["flavor_capabilities"]]
    # Only what changes behaviour here (Octavia's compute_flavor, amp_image_tag, sriov_vip,
    # allow_member_sriov, compute_zone, volume_zone, management_network would be ignored);
    # ACTIVE_ACTIVE's bounds and autoscaler settings.
    assert names == ["loadbalancer_topology", "amphora_min", "amphora_max", "autoscale"]
    assert all(c["description"] for c in reply.body["flavor_capabilities"])
    reply = await api.get(
        f"{PROVIDERS}/octavia/flavor_capabilities?name=loadbalancer_topology&fields=name",
        expect=200,
    )
    assert reply.body == {"flavor_capabilities": [{"name": "loadbalancer_topology"}]}
    reply = await api.get(f"{PROVIDERS}/amphora/availability_zone_capabilities", expect=200)
    names = [c["name"] for c in reply.body["availability_zone_capabilities"]]
    assert names == ["valid_vip_networks"]
    reply = await api.get(
        f"{PROVIDERS}/amphora/availability_zone_capabilities?description=nothing", expect=200
    )
    assert reply.body == {"availability_zone_capabilities": []}
    for what in ("flavor_capabilities", "availability_zone_capabilities"):
        reply = await api.get(f"{PROVIDERS}/f5/{what}", expect=400)
        assert reply.fault() == "Provider 'f5' is not enabled."


async def test_rbac(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    member = {"X-Project-Id": "b" * 32, "X-Roles": "member"}
    admin = {"X-Project-Id": "a" * 32, "X-Roles": "admin"}
    await api.get(PROVIDERS, headers=member, expect=200)
    await api.get(PROVIDERS, headers={"X-Project-Id": "b" * 32, "X-Roles": ""}, expect=403)
    for what in ("flavor_capabilities", "availability_zone_capabilities"):
        reply = await api.get(f"{PROVIDERS}/amphora/{what}", headers=member, expect=403)
        assert reply.fault() == "Policy does not allow this request to be performed."
        await api.get(f"{PROVIDERS}/amphora/{what}", headers=admin, expect=200)
