"""Octavia fidelity, version discovery (octavia-fidelity.md 2.J) and pagination links (2.K)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from tests.integration.api.conftest import Api

LBS = "/v2/lbaas/loadbalancers"


async def test_version_document(api: Api) -> None:
    reply = await api.get("/", expect=200)
    versions = reply.body["versions"]
    assert [v["id"] for v in versions] == [f"v2.{n}" for n in range(31)]
    assert [v["status"] for v in versions] == ["SUPPORTED"] * 30 + ["CURRENT"]
    assert {v["links"][0]["href"] for v in versions} == {f"{api.base}/v2"}
    assert all(v["links"] == [{"href": f"{api.base}/v2", "rel": "self"}] for v in versions)
    assert versions[0]["updated"] == "2016-12-11T00:00:00Z"
    assert versions[7]["updated"] == "2018-01-25T12:00:00Z"
    assert versions[18]["updated"] == "2020-04-29T01:00:00Z"
    assert versions[30]["updated"] == "2025-02-26T00:00:00Z"
    for path in ("/v2", "/v2/", "/v2.0", "/v2.0/", "/v2/lbaas", "/v2/octavia"):
        root = await api.get(path, expect=200)
        assert root.body == "v2", path
        assert root.headers["Content-Type"].startswith("application/json")
    # The Neutron subset is found beside the linked /v2 (clients in auth_type none go there).
    assert "subnets" in (await api.get("/v2/subnets", expect=200)).body


async def test_pagination_link_order(api: Api) -> None:
    for n in range(3):
        await api.create_lb(name=f"lb-{n}", tags=["t"])
    page = (await api.get(f"{LBS}?tags=t&limit=2&sort=name:asc", expect=200)).body
    (link,) = page["loadbalancers_links"]
    assert link["rel"] == "next"
    last = page["loadbalancers"][-1]["id"]
    assert link["href"] == f"{api.base}{LBS}?limit=2&sort=name:asc&marker={last}&tags=t"
    follow = (await api.get(link["href"], expect=200)).body
    assert [lb["name"] for lb in follow["loadbalancers"]] == ["lb-2"]
    prev = {x["rel"]: x["href"] for x in follow["loadbalancers_links"]}["previous"]
    first = follow["loadbalancers"][0]["id"]
    assert prev == f"{api.base}{LBS}?limit=2&sort=name:asc&marker={first}&page_reverse=True&tags=t"
    page = (await api.get(f"{LBS}?sort_key=name&limit=1", expect=200)).body
    href = page["loadbalancers_links"][0]["href"]
    keys = [k for k, _ in parse_qsl(urlsplit(href).query)]
    assert keys == ["limit", "sort_key", "marker"]
