"""Collections over real HTTP: filters, tag filters, sorting, pagination links followed to the
end, field selection, and project isolation under the header-driven ``testing`` strategy."""

from __future__ import annotations

from typing import Any

from tests.integration.api.conftest import SUBNET, Api, MakeApi

LBS = "/v2/lbaas/loadbalancers"


async def _lbs(api: Api, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [await api.create_lb(active=False, name=f"lb-{i:02d}", **extra) for i in range(count)]


async def test_filters_by_name_id_attributes_and_tags(api: Api) -> None:
    made = [
        await api.create_lb(active=False, name="alpha", tags=["red", "big"]),
        await api.create_lb(active=False, name="beta", tags=["red"]),
        await api.create_lb(active=False, name="gamma", tags=["blue"], admin_state_up=False),
    ]
    ids = {lb["name"]: lb["id"] for lb in made}

    async def names(query: str) -> list[str]:
        reply = await api.get(f"{LBS}?{query}", expect=200)
        return sorted(lb["name"] for lb in reply.body["loadbalancers"])

    assert await names("name=beta") == ["beta"]
    assert await names(f"id={ids['gamma']}") == ["gamma"]
    assert await names("name=nobody") == []
    assert await names("admin_state_up=False") == ["gamma"]
    assert await names("admin_state_up=true&name=alpha") == ["alpha"]
    assert await names(f"vip_address={made[1]['vip_address']}") == ["beta"]
    assert await names("tags=red") == ["alpha", "beta"]
    assert await names("tags=red,big") == ["alpha"]
    assert await names("tags=red&tags=big") == ["alpha"]
    assert await names("tags-any=big,blue") == ["alpha", "gamma"]
    assert await names("not-tags=red") == ["gamma"]
    assert await names("not-tags-any=big,blue") == ["beta"]
    assert await names(f"project_id={made[0]['project_id']}") == ["alpha", "beta", "gamma"]
    assert await names("project_id=ffffffffffffffffffffffffffffffff") == []
    for bad in (
        "colour=red",
        "name=a&name=b",
        "listeners=x",
        "protocol_port=80",
        "admin_state_up=maybe",
    ):
        reply = await api.get(f"{LBS}?{bad}")
        assert reply.status == 400, bad
        assert reply.fault() == "One or more arguments are either duplicate or invalid"
    li = await api.create_lb(name="with-listener")
    listener = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": li["id"], "protocol": "HTTP", "protocol_port": 80},
    )
    reply = await api.get(
        f"/v2/lbaas/listeners?loadbalancer_id={li['id']}&protocol_port=80", expect=200
    )
    assert [x["id"] for x in reply.body["listeners"]] == [listener["id"]]
    reply = await api.get(
        "/v2/lbaas/listeners?loadbalancer_id=00000000-0000-4000-8000-000000000000", expect=200
    )
    assert reply.body["listeners"] == []


async def test_sorting(api: Api) -> None:
    for name in ("b", "c", "a"):
        await api.create_lb(active=False, name=name)

    async def order(query: str) -> list[str]:
        return [
            lb["name"] for lb in (await api.get(f"{LBS}?{query}", expect=200)).body["loadbalancers"]
        ]

    assert await order("") == ["b", "c", "a"]
    assert await order("sort=name:asc") == ["a", "b", "c"]
    assert await order("sort=name:desc") == ["c", "b", "a"]
    assert await order("sort=name") == ["a", "b", "c"]
    assert await order("sort_key=name&sort_dir=desc") == ["c", "b", "a"]
    assert await order("sort=created_at:desc") == ["a", "c", "b"]
    for bad in (
        "sort=colour:asc",
        "sort=name:sideways",
        "sort_key=nope",
        "sort_key=name&sort_dir=up",
    ):
        assert (await api.get(f"{LBS}?{bad}")).status == 400, bad


async def test_pagination_links_are_followable_to_the_end(api: Api) -> None:
    made = await _lbs(api, 7)
    expected = [lb["id"] for lb in made]
    for sort in ("", "&sort=name:desc"):
        want = expected if not sort else list(reversed(expected))
        seen: list[str] = []
        url: str | None = f"{LBS}?limit=3{sort}"
        pages = 0
        while url is not None and pages < 10:
            reply = await api.get(url, expect=200)
            seen += [lb["id"] for lb in reply.body["loadbalancers"]]
            links = {link["rel"]: link["href"] for link in reply.body["loadbalancers_links"]}
            if pages > 0:
                assert "previous" in links
            url = links.get("next")
            pages += 1
        assert seen == want
        assert pages == 3
    first = (await api.get(f"{LBS}?limit=3", expect=200)).body
    next_href = first["loadbalancers_links"][0]["href"]
    assert next_href.startswith(api.base) and "marker=" in next_href and "limit=3" in next_href
    second = (await api.get(next_href, expect=200)).body
    previous = {link["rel"]: link["href"] for link in second["loadbalancers_links"]}["previous"]
    back = (await api.get(previous, expect=200)).body
    assert [lb["id"] for lb in back["loadbalancers"]] == expected[:3]
    everything = (await api.get(LBS, expect=200)).body
    assert len(everything["loadbalancers"]) == 7 and everything["loadbalancers_links"] == []
    filtered = (await api.get(f"{LBS}?name=lb-01&limit=1", expect=200)).body
    assert "name=lb-01" in filtered["loadbalancers_links"][0]["href"]
    for bad in (
        "limit=abc",
        "limit=1.5",
        "marker=00000000-0000-4000-8000-000000000000",
        "page_reverse=sideways",
    ):
        assert (await api.get(f"{LBS}?{bad}")).status == 400, bad


async def test_field_selection(api: Api) -> None:
    lb = await api.create_lb(active=False, name="fields")
    reply = await api.get(f"{LBS}?fields=id&fields=name", expect=200)
    assert reply.body["loadbalancers"] == [{"id": lb["id"], "name": "fields"}]
    reply = await api.get(f"{LBS}?fields=id,vip_address,nonsense", expect=200)
    assert reply.body["loadbalancers"] == [{"id": lb["id"], "vip_address": lb["vip_address"]}]
    reply = await api.get(f"{LBS}/{lb['id']}?fields=provisioning_status", expect=200)
    assert reply.body == {"loadbalancer": {"provisioning_status": "PENDING_CREATE"}}


async def test_project_isolation_with_header_identities(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    alice = {"X-Project-Id": "a" * 32, "X-Roles": "member"}
    bob = {"X-Project-Id": "b" * 32, "X-Roles": "member"}
    reader = {"X-Project-Id": "a" * 32, "X-Roles": "reader"}
    admin = {"X-Project-Id": "c" * 32, "X-Roles": "admin"}
    body = {"loadbalancer": {"vip_subnet_id": SUBNET, "name": "mine"}}
    lb_a = (await api.post(LBS, body, headers=alice, expect=201)).body["loadbalancer"]
    lb_b = (await api.post(LBS, body, headers=bob, expect=201)).body["loadbalancer"]
    assert lb_a["project_id"] == "a" * 32
    await api.activate(lb_a["id"])

    async def visible(headers: dict[str, str], query: str = "") -> set[str]:
        reply = await api.get(f"{LBS}{query}", headers=headers, expect=200)
        return {lb["id"] for lb in reply.body["loadbalancers"]}

    assert await visible(alice) == {lb_a["id"]}
    assert await visible(bob) == {lb_b["id"]}
    assert await visible(bob, f"?project_id={'a' * 32}") == {lb_b["id"]}
    assert await visible(reader) == {lb_a["id"]}
    assert await visible(admin) == {lb_a["id"], lb_b["id"]}
    assert await visible(admin, f"?project_id={'b' * 32}") == {lb_b["id"]}
    # Another project's LB is hidden (404); a reader of the owning project is refused (403).
    reply = await api.get(f"{LBS}/{lb_a['id']}", headers=bob)
    assert reply.status == 404
    assert reply.fault() == f"Load Balancer {lb_a['id']} not found."
    await api.get(f"{LBS}/{lb_a['id']}", headers=reader, expect=200)
    await api.put(
        f"{LBS}/{lb_a['id']}", {"loadbalancer": {"name": "x"}}, headers=reader, expect=403
    )
    await api.put(f"{LBS}/{lb_a['id']}", {"loadbalancer": {"name": "x"}}, headers=bob, expect=404)
    listener = {
        "listener": {"loadbalancer_id": lb_a["id"], "protocol": "HTTP", "protocol_port": 80}
    }
    await api.post("/v2/lbaas/listeners", listener, headers=bob, expect=404)
    await api.put(f"{LBS}/{lb_a['id']}/failover", None, headers=alice, expect=403)
    await api.put(f"{LBS}/{lb_a['id']}/failover", None, headers=admin, expect=202)
    stranger = {"loadbalancer": {"vip_subnet_id": SUBNET, "project_id": "b" * 32}}
    await api.post(LBS, stranger, headers=alice, expect=403)
    await api.get(LBS, headers={"X-Project-Id": "d" * 32, "X-Roles": ""}, expect=403)


async def test_noauth_takes_project_from_header_and_is_admin(api: Api) -> None:
    mine = await api.create_lb(active=False)
    theirs = (
        await api.post(
            LBS,
            {"loadbalancer": {"vip_subnet_id": SUBNET}},
            headers={"X-Project-Id": "e" * 32},
            expect=201,
        )
    ).body["loadbalancer"]
    assert theirs["project_id"] == "e" * 32 and mine["project_id"] != theirs["project_id"]
    reply = await api.get(LBS, headers={"X-Auth-Token": "notused"}, expect=200)
    assert len(reply.body["loadbalancers"]) == 2
