"""The served OpenAPI document and its HTML page: every registered route is in it, with the
request schemas the handlers validate with, list parameters on lists, and a page that needs
nothing from outside."""

from __future__ import annotations

import re

import aiohttp

from services.api.app import ROUTE_SPECS
from tests.integration.api.conftest import Api


async def test_document_covers_every_route(api: Api) -> None:
    reply = await api.get("/openapi.json", expect=200)
    doc = reply.body
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": api.base}]
    specs = api.app[ROUTE_SPECS].specs
    assert {(s.path, s.method.lower()) for s in specs} == {
        (path, method) for path, ops in doc["paths"].items() for method in ops
    }
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for path in (
        "/v2/lbaas/loadbalancers",
        "/v2/lbaas/quotas/{project_id}",
        "/v2/lbaas/flavors/{flavor_id}",
        "/v2/lbaas/flavorprofiles",
        "/v2/lbaas/availabilityzones/{availability_zone_name}",
        "/v2/lbaas/availabilityzoneprofiles",
        "/v2/lbaas/providers/{provider}/flavor_capabilities",
        "/v2/octavia/amphorae/{amphora_id}/failover",
        "/v3/auth/tokens",
        "/v2.0/subnets",
        "/openapi.json",
    ):
        assert path in doc["paths"], path


async def test_operations_carry_schemas_and_parameters(api: Api) -> None:
    doc = (await api.get("/openapi.json", expect=200)).body
    schemas = doc["components"]["schemas"]
    create = doc["paths"]["/v2/lbaas/loadbalancers"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["loadbalancer"] and body["additionalProperties"] is False
    ref = body["properties"]["loadbalancer"]["$ref"]
    lb = schemas[ref.rsplit("/", 1)[-1]]
    assert {"vip_subnet_id", "flavor_id", "availability_zone", "listeners"} <= set(lb["properties"])
    assert lb["additionalProperties"] is False
    assert "201" in create["responses"] and "default" in create["responses"]
    quota = doc["paths"]["/v2/lbaas/quotas/{project_id}"]
    assert set(quota) == {"get", "put", "delete"}
    assert quota["put"]["responses"]["202"]["content"]
    quota_ref = quota["put"]["requestBody"]["content"]["application/json"]["schema"]
    limits = schemas[quota_ref["properties"]["quota"]["$ref"].rsplit("/", 1)[-1]]
    assert {"loadbalancer", "load_balancer", "health_monitor"} <= set(limits["properties"])
    listing = doc["paths"]["/v2/lbaas/flavors"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"limit", "marker", "page_reverse", "sort", "fields"} <= names
    profiles = doc["paths"]["/v2/lbaas/flavorprofiles"]["get"]["responses"]["200"]
    answer = profiles["content"]["application/json"]["schema"]["properties"]
    assert set(answer) == {"flavorprofiles", "flavorprofile_links"}
    one = doc["paths"]["/v2/octavia/amphorae/{amphora_id}"]["get"]
    assert [p["name"] for p in one["parameters"] if p["in"] == "path"] == ["amphora_id"]
    delete = doc["paths"]["/v2/lbaas/flavors/{flavor_id}"]["delete"]
    assert delete["responses"]["204"] == {"description": "No content."}
    assert schemas["Fault"]["required"] == ["faultcode", "faultstring", "debuginfo"]


async def test_docs_page_is_self_contained(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        async with session.get(f"{api.base}/docs", headers=headers) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "<link" not in page
    # Every reference stays on this server (no CDN): only in-page anchors and /openapi.json.
    for href in re.findall(r'(?:href|src)="([^"]*)"', page):
        assert href.startswith("#") or href == "/openapi.json", href
    assert "/v2/lbaas/availabilityzoneprofiles" in page
    assert 'id="schema-FlavorCreate"' in page and 'href="#schema-FlavorCreate"' in page
    assert "<b>PUT</b>" in page and "/v2/octavia/amphorae/{amphora_id}/config" in page
