"""The Neutron v2.0 read subset over raw HTTP: floating IPs, ports, networks, subnets, QoS
policies, with Neutron's filters, body keys, 400 on unknown filters and 404 texts."""

from __future__ import annotations

import pytest

from tests.integration.api.conftest import NETWORK, SUBNET, Api, MakeApi

OWN, OTHER = "a" * 32, "b" * 32


async def test_floatingips_are_an_empty_list_with_the_filters_clients_send(api: Api) -> None:
    lb = await api.create_lb()
    query = f"fixed_ip_address={lb['vip_address']}&port_id={lb['vip_port_id']}"
    assert (await api.get(f"/v2.0/floatingips?{query}", expect=200)).body == {"floatingips": []}
    for extra in (
        f"floating_network_id={NETWORK}",
        f"project_id={OWN}",
        f"tenant_id={OWN}",
        "floating_ip_address=127.77.0.5",
        "router_id=x&status=ACTIVE&fields=id&fields=floating_ip_address",
        "tags=a,b&not-tags-any=c",
    ):
        assert (await api.get(f"/v2.0/floatingips?{extra}", expect=200)).body == {"floatingips": []}
    assert (await api.get("/v2.0/floatingips.json", expect=200)).body == {"floatingips": []}
    assert (await api.get("/v2/floatingips", expect=200)).body == {"floatingips": []}
    assert (await api.get("/v2/qos/policies", expect=200)).body == {"policies": []}


async def test_an_unknown_filter_is_neutrons_400(api: Api) -> None:
    reply = await api.get("/v2.0/floatingips?color=red&bogus=1", expect=400)
    assert reply.body == {
        "NeutronError": {
            "type": "HTTPBadRequest",
            "message": "['bogus', 'color'] is invalid attribute for filtering",
            "detail": "",
        }
    }
    reply = await api.get("/v2.0/ports?floating_network_id=x", expect=400)
    assert reply.body["NeutronError"]["message"] == (
        "['floating_network_id'] is invalid attribute for filtering"
    )


@pytest.mark.parametrize(
    ("path", "kind", "message"),
    [
        ("floatingips", "FloatingIPNotFound", "Floating IP {id} could not be found"),
        ("ports", "PortNotFound", "Port {id} could not be found."),
        ("networks", "NetworkNotFound", "Network {id} could not be found."),
        ("subnets", "SubnetNotFound", "Subnet {id} could not be found."),
        ("qos/policies", "QosPolicyNotFound", "QoS policy {id} could not be found."),
    ],
)
async def test_unknown_ids_get_neutrons_404(api: Api, path: str, kind: str, message: str) -> None:
    missing = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    reply = await api.get(f"/v2.0/{path}/{missing}", expect=404)
    assert reply.body == {
        "NeutronError": {"type": kind, "message": message.format(id=missing), "detail": ""}
    }


async def test_vip_ports_with_their_fixed_ips_and_neutrons_port_filters(api: Api) -> None:
    lb = await api.create_lb(name="web")
    other = await api.create_lb(name="db")
    ports = (await api.get("/v2.0/ports", expect=200)).body["ports"]
    assert {p["id"] for p in ports} >= {lb["vip_port_id"], other["vip_port_id"]}
    port = next(p for p in ports if p["id"] == lb["vip_port_id"])
    assert port["fixed_ips"] == [{"subnet_id": SUBNET, "ip_address": lb["vip_address"]}]
    assert port["name"] == f"octavia-lb-{lb['id']}"
    assert (port["device_owner"], port["device_id"]) == ("Octavia", f"lb-{lb['id']}")
    assert (port["network_id"], port["admin_state_up"], port["status"]) == (NETWORK, False, "DOWN")
    assert port["project_id"] == port["tenant_id"] == lb["project_id"]

    async def ids(query: str) -> list[str]:
        reply = await api.get(f"/v2.0/ports?{query}", expect=200)
        return [p["id"] for p in reply.body["ports"]]

    assert await ids(f"fixed_ips=ip_address={lb['vip_address']}") == [lb["vip_port_id"]]
    both = f"fixed_ips=ip_address={lb['vip_address']}&fixed_ips=subnet_id={SUBNET}"
    assert await ids(both) == [lb["vip_port_id"]]
    assert await ids(f"fixed_ips=ip_address={lb['vip_address']}&fixed_ips=subnet_id=x") == []
    assert await ids(f"device_id=lb-{other['id']}") == [other["vip_port_id"]]
    assert await ids(f"id={lb['vip_port_id']}&id={other['vip_port_id']}") == sorted(
        [lb["vip_port_id"], other["vip_port_id"]], key=[p["id"] for p in ports].index
    )
    assert set(await ids(f"network_id={NETWORK}&device_owner=Octavia")) >= {lb["vip_port_id"]}
    assert await ids("admin_state_up=true") == []
    assert await ids(f"project_id={lb['project_id']}&name=octavia-lb-{lb['id']}") == [
        lb["vip_port_id"]
    ]
    shown = await api.get(f"/v2.0/ports/{lb['vip_port_id']}?fields=id&fields=fixed_ips")
    assert shown.body == {"port": {"id": port["id"], "fixed_ips": port["fixed_ips"]}}


async def test_ports_are_project_scoped(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    own = {"X-Project-Id": OWN, "X-Roles": "member"}
    other = {"X-Project-Id": OTHER, "X-Roles": "member"}
    created = await api.post(
        "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": SUBNET}}, headers=own
    )
    assert created.status == 201, created.body
    port_id = created.body["loadbalancer"]["vip_port_id"]
    mine = (await api.get("/v2.0/ports", headers=own, expect=200)).body["ports"]
    assert [p["id"] for p in mine] == [port_id]
    assert (await api.get("/v2.0/ports", headers=other, expect=200)).body == {"ports": []}
    await api.get(f"/v2.0/ports/{port_id}", headers=other, expect=404)


async def test_networks_subnets_and_qos_policies_shapes_and_filters(api: Api) -> None:
    networks = (await api.get("/v2.0/networks?router:external=True", expect=200)).body["networks"]
    assert [n["id"] for n in networks] == [NETWORK]
    network = networks[0]
    assert network["subnets"] == [SUBNET] and network["status"] == "ACTIVE"
    for key in ("admin_state_up", "shared", "mtu", "project_id", "tenant_id", "tags"):
        assert key in network
    assert (await api.get("/v2.0/networks?router:external=False", expect=200)).body == {
        "networks": []
    }
    assert (await api.get("/v2.0/networks?name=public&fields=name", expect=200)).body == {
        "networks": [{"name": "public"}]
    }
    subnets = (await api.get(f"/v2.0/subnets?network_id={NETWORK}&ip_version=4")).body["subnets"]
    assert [s["id"] for s in subnets] == [SUBNET]
    subnet = subnets[0]
    assert subnet["allocation_pools"] and subnet["ip_version"] == 4
    for key in ("cidr", "gateway_ip", "enable_dhcp", "dns_nameservers", "host_routes"):
        assert key in subnet
    assert (await api.get(f"/v2.0/subnets/{SUBNET}.json", expect=200)).body["subnet"] == subnet
    assert (await api.get("/v2.0/qos/policies", expect=200)).body == {"policies": []}
    assert (await api.get("/v2.0/qos/policies?name=gold&shared=true", expect=200)).body == {
        "policies": []
    }


async def test_limit_and_marker_page_with_neutrons_links(api: Api) -> None:
    for _ in range(3):
        await api.create_lb()
    first = (await api.get("/v2.0/ports?limit=2&sort_key=id&sort_dir=asc", expect=200)).body
    assert len(first["ports"]) == 2
    ids = [p["id"] for p in first["ports"]]
    assert ids == sorted(ids)
    (link,) = first["ports_links"]
    assert link["rel"] == "next" and f"marker={ids[-1]}" in link["href"]
    rest = (await api.get(link["href"], expect=200)).body
    assert ids[-1] not in [p["id"] for p in rest["ports"]] and rest["ports"]
