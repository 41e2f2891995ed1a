"""The served OpenAPI document and Swagger UI on /docs: every registered route is in it, with the
request schemas the handlers validate with, response schemas that real answers conform to,
error shapes, the X-Auth-Token scheme, list parameters on lists, and a viewer whose every file
comes from this server."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs

from services.api.app import ROUTE_SPECS
from services.api.auth.identity import bootstrap_config, save
from services.api.auth.tokens import new_token_key
from services.api.http.resources.openapi import DOCS_ASSETS, DOCS_SCRIPT
from tests.integration.api.conftest import SUBNET, Api, MakeApi
from tests.integration.api.test_amphorae import boot

PROJECT = "0123456789abcdef0123456789abcdef"


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
    shown = doc["paths"]["/v2/lbaas/pools/{pool_id}"]["get"]["responses"]["200"]
    pool_ref = shown["content"]["application/json"]["schema"]["properties"]["pool"]["$ref"]
    pool = schemas[pool_ref.rsplit("/", 1)[-1]]
    assert pool["additionalProperties"] is False and "healthmonitor_id" in pool["required"]


async def test_docs_serve_swagger_ui_from_here(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        headers = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        async with session.get(f"{api.base}/docs", headers=headers) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
        assert page.startswith("<!DOCTYPE html>")
        assert "<script>" not in page  # no inline script: CSP 'self' friendly
        # Every file the page loads is on this server (no CDN), and each one is served.
        assets = re.findall(r'(?:href|src)="([^"]*)"', page)
        assert {"/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"} <= set(assets)
        for asset in assets:
            assert asset.startswith("/docs/"), asset
            async with session.get(f"{api.base}{asset}", headers={"Accept": "*/*"}) as resp:
                assert resp.status == 200, asset
                assert resp.content_type == DOCS_ASSETS[asset.removeprefix("/docs/")], asset
                assert len(await resp.read()) == resp.content_length > 0
        async with session.get(f"{api.base}/docs/{DOCS_SCRIPT}") as resp:
            script = await resp.text()
        assert 'url: "/openapi.json"' in script and "SwaggerUIBundle(" in script
        async with session.get(f"{api.base}/docs/swagger-ui-bundle.js") as resp:
            # Swagger UI 5 (OpenAPI 3.1 support), not 4's "3.0." only check.
            assert b"isOAS31" in await resp.read()
    missing = await api.get("/docs/index.html", expect=404)
    assert missing.fault() == "Document index.html not found."
    await api.get("/docs/..%2Fcore.py", expect=404)


async def test_security_scheme_and_error_shapes(api: Api) -> None:
    doc = (await api.get("/openapi.json", expect=200)).body
    assert doc["components"]["securitySchemes"]["X-Auth-Token"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Auth-Token",
        "description": ANY_TEXT,
    }
    token = [{"X-Auth-Token": []}]
    paths = doc["paths"]
    assert paths["/v2/lbaas/loadbalancers"]["get"]["security"] == token
    assert paths["/v2/octavia/amphorae"]["get"]["security"] == token
    assert paths["/v3/users"]["get"]["security"] == token
    for public in (("/", "get"), ("/v2", "get"), ("/v3/auth/tokens", "post"), ("/docs", "get")):
        assert "security" not in paths[public[0]][public[1]], public
    default = paths["/v2/lbaas/pools"]["post"]["responses"]["default"]
    shapes = default["content"]["application/json"]["schema"]["anyOf"]
    assert shapes[0] == {"$ref": "#/components/schemas/Fault"}
    fault = doc["components"]["schemas"]["Fault"]
    assert fault["additionalProperties"] is False
    # Real errors match the documented shapes: a fault, pecan's 404, Keystone's 401.
    bad = await api.post("/v2/lbaas/pools", {"pool": {"protocol": "HTTP"}}, expect=400)
    conform(doc, "/v2/lbaas/pools", "post", 400, bad.body)
    gone = await api.get("/v2/lbaas/nothing-here", expect=404)
    conform(doc, "/v2/lbaas/loadbalancers", "get", 404, gone.body)


ANY_TEXT = type("AnyText", (), {"__eq__": lambda self, other: isinstance(other, str)})()


def conform(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """Validates ``body`` against the document's schema of that answer (or of ``default``)."""
    responses = doc["paths"][path][method]["responses"]
    answer = responses.get(str(status), responses["default"])
    schema = answer["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, (method, path, status, errors[:5])


async def test_real_answers_conform_to_the_document(api: Api) -> None:
    """Every kind created, shown and listed through the API, and quotas, flavors, zones,
    providers, statuses, stats and amphorae: each answer validates against its schema."""
    doc = (await api.get("/openapi.json", expect=200)).body
    seen: set[tuple[str, str]] = set()

    async def check(method: str, template: str, path: str, body: Any = None) -> dict[str, Any]:
        op = doc["paths"][template][method.lower()]
        status = int(next(code for code in op["responses"] if code != "default"))
        reply = await api.call(method, path, body, expect=status)
        if status not in (202, 204):
            conform(doc, template, method.lower(), status, reply.body)
        seen.add((method, template))
        return reply.body if isinstance(reply.body, dict) else {}

    lbaas = "/v2/lbaas"
    lb = (
        await check(
            "POST",
            f"{lbaas}/loadbalancers",
            f"{lbaas}/loadbalancers",
            {"loadbalancer": {"vip_subnet_id": SUBNET, "name": "doc"}},
        )
    )["loadbalancer"]
    await api.activate(lb["id"])
    one_lb = f"{lbaas}/loadbalancers/{{loadbalancer_id}}"
    await check("GET", one_lb, f"{lbaas}/loadbalancers/{lb['id']}")
    await check("PUT", one_lb, f"{lbaas}/loadbalancers/{lb['id']}", {"loadbalancer": {"name": "d"}})
    await api.settle(lb["id"])
    await check("GET", f"{lbaas}/loadbalancers", f"{lbaas}/loadbalancers")

    async def kind(
        collection: str,
        key: str,
        fields: dict[str, Any],
        parent: tuple[str, str, str] = ("", "", ""),
    ) -> str:
        """POST, GET one and list; ``parent``: (path segment, its parameter, its id)."""
        segment, param, parent_id = parent
        template = f"{lbaas}{segment}{'/{' + param + '}' if param else ''}/{collection}"
        base = f"{lbaas}{segment}{'/' + parent_id if parent_id else ''}/{collection}"
        created = (await check("POST", template, base, {key: fields}))[key]
        await api.settle(lb["id"])
        item = next(p for p in doc["paths"] if re.fullmatch(re.escape(template) + r"/{\w+}", p))
        await check("GET", item, f"{base}/{created['id']}")
        await check("GET", template, base)
        return str(created["id"])

    listener = await kind(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80},
    )
    pool = await kind(
        "pools",
        "pool",
        {
            "listener_id": listener,
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "session_persistence": {"type": "APP_COOKIE", "cookie_name": "c"},
        },
    )
    await kind(
        "members",
        "member",
        {"address": "127.0.0.1", "protocol_port": 8080},
        ("/pools", "pool_id", pool),
    )
    await kind(
        "healthmonitors",
        "healthmonitor",
        {"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2},
    )
    policy = await kind(
        "l7policies",
        "l7policy",
        {"listener_id": listener, "action": "REDIRECT_TO_POOL", "redirect_pool_id": pool},
    )
    await kind(
        "rules",
        "rule",
        {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/a"},
        ("/l7policies", "l7policy_id", policy),
    )
    await check("GET", f"{one_lb}/status", f"{lbaas}/loadbalancers/{lb['id']}/status")
    await check("GET", f"{one_lb}/stats", f"{lbaas}/loadbalancers/{lb['id']}/stats")
    await check(
        "GET", f"{lbaas}/listeners/{{listener_id}}/stats", f"{lbaas}/listeners/{listener}/stats"
    )
    # A single-call create answers the whole graph.
    graph = {
        "vip_subnet_id": SUBNET,
        "listeners": [
            {
                "protocol": "HTTP",
                "protocol_port": 81,
                "default_pool": {
                    "name": "graph-pool",
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                    "members": [{"address": "127.0.0.2", "protocol_port": 80}],
                    "healthmonitor": {"type": "TCP", "delay": 5, "timeout": 3, "max_retries": 2},
                },
                "l7policies": [
                    {
                        "action": "REJECT",
                        "rules": [{"type": "PATH", "compare_type": "REGEX", "value": "^/x"}],
                    }
                ],
            }
        ],
    }
    created = await check(
        "POST", f"{lbaas}/loadbalancers", f"{lbaas}/loadbalancers", {"loadbalancer": graph}
    )
    assert created["loadbalancer"]["listeners"][0]["l7policies"][0]["rules"]

    quotas = f"{lbaas}/quotas"
    await check(
        "PUT", f"{quotas}/{{project_id}}", f"{quotas}/{PROJECT}", {"quota": {"loadbalancer": 5}}
    )
    await check("GET", f"{quotas}/{{project_id}}", f"{quotas}/{PROJECT}")
    await check("GET", quotas, quotas)
    await check("GET", f"{quotas}/defaults", f"{quotas}/defaults")

    profile = (
        await check(
            "POST",
            f"{lbaas}/flavorprofiles",
            f"{lbaas}/flavorprofiles",
            {"flavorprofile": {"name": "p", "provider_name": "amphora", "flavor_data": "{}"}},
        )
    )["flavorprofile"]
    await check("GET", f"{lbaas}/flavorprofiles", f"{lbaas}/flavorprofiles")
    flavor = (
        await check(
            "POST",
            f"{lbaas}/flavors",
            f"{lbaas}/flavors",
            {"flavor": {"name": "f", "flavor_profile_id": profile["id"]}},
        )
    )["flavor"]
    await check("GET", f"{lbaas}/flavors/{{flavor_id}}", f"{lbaas}/flavors/{flavor['id']}")
    await check("GET", f"{lbaas}/flavors", f"{lbaas}/flavors")
    zone_profile = (
        await check(
            "POST",
            f"{lbaas}/availabilityzoneprofiles",
            f"{lbaas}/availabilityzoneprofiles",
            {
                "availability_zone_profile": {
                    "name": "zp",
                    "provider_name": "amphora",
                    "availability_zone_data": "{}",
                }
            },
        )
    )["availability_zone_profile"]
    await check(
        "POST",
        f"{lbaas}/availabilityzones",
        f"{lbaas}/availabilityzones",
        {"availability_zone": {"name": "z1", "availability_zone_profile_id": zone_profile["id"]}},
    )
    await check("GET", f"{lbaas}/availabilityzones", f"{lbaas}/availabilityzones")
    await check("GET", f"{lbaas}/providers", f"{lbaas}/providers")
    await check(
        "GET",
        f"{lbaas}/providers/{{provider}}/flavor_capabilities",
        f"{lbaas}/providers/amphora/flavor_capabilities",
    )

    amphora = await boot(api, lb["id"])
    amphorae = "/v2/octavia/amphorae"
    await check("GET", amphorae, amphorae)
    await check("GET", f"{amphorae}/{{amphora_id}}", f"{amphorae}/{amphora}")
    await check("GET", f"{amphorae}/{{amphora_id}}/stats", f"{amphorae}/{amphora}/stats")
    kinds = (
        "loadbalancers",
        "listeners",
        "pools",
        "members",
        "healthmonitors",
        "l7policies",
        "rules",
        "quotas",
        "flavors",
        "amphorae",
    )
    for name in kinds:
        assert any(name in template for _, template in seen), name


async def test_keystone_and_neutron_answers_conform(make_api: MakeApi, tmp_path: Path) -> None:
    """With real tokens: the identity reads, token checks, the Neutron reads and security
    groups answer under the envelope keys the document names, and a 401 is Keystone's body."""
    identity = tmp_path / "identity.yaml"
    save(identity, bootstrap_config("admin-pw"))
    api = await make_api(
        auth_strategy="keystone", token_keys=new_token_key(), identity_file=identity
    )
    doc = (await api.get("/openapi.json", expect=200)).body
    denied = await api.get("/v2/lbaas/loadbalancers", expect=401)
    conform(doc, "/v2/lbaas/loadbalancers", "get", 401, denied.body)
    scope = {"project": {"name": "admin", "domain": {"name": "Default"}}}
    user = {"name": "admin", "domain": {"name": "Default"}, "password": "admin-pw"}
    auth = {"identity": {"methods": ["password"], "password": {"user": user}}, "scope": scope}
    issued = await api.post("/v3/auth/tokens", {"auth": auth}, expect=201)
    conform(doc, "/v3/auth/tokens", "post", 201, issued.body)
    token = issued.headers["X-Subject-Token"]
    headers = {"X-Auth-Token": token}
    checked = await api.get("/v3/auth/tokens", headers={**headers, "X-Subject-Token": token})
    conform(doc, "/v3/auth/tokens", "get", checked.status, checked.body)
    admin_id = issued.body["token"]["user"]["id"]
    reads = {
        "/v3": "/v3",
        "/v3/auth/projects": "/v3/auth/projects",
        "/v3/auth/catalog": "/v3/auth/catalog",
        "/v3/users": "/v3/users",
        "/v3/users/{user}": f"/v3/users/{admin_id}",
        "/v3/users/{user}/projects": f"/v3/users/{admin_id}/projects",
        "/v3/projects": "/v3/projects",
        "/v3/roles": "/v3/roles",
        "/v3/domains": "/v3/domains",
        "/v3/domains/{domain}": "/v3/domains/default",
        "/v3/role_assignments": "/v3/role_assignments",
        "/v2.0/networks": "/v2.0/networks",
        "/v2.0/subnets/{id}": f"/v2.0/subnets/{SUBNET}",
        "/v2/subnets": "/v2/subnets",
        "/v2.0/ports": "/v2.0/ports",
        "/v2.0/qos/policies": "/v2.0/qos/policies",
        "/v2.0/security-groups": "/v2.0/security-groups",
    }
    for template, path in reads.items():
        reply = await api.get(path, headers=headers, expect=200)
        conform(doc, template, "get", 200, reply.body)
    group = {"security_group": {"name": "web"}}
    created = await api.post("/v2.0/security-groups", group, headers=headers, expect=201)
    conform(doc, "/v2.0/security-groups", "post", 201, created.body)
    shown = await api.get(
        f"/v2.0/security-groups/{created.body['security_group']['id']}", headers=headers
    )
    conform(doc, "/v2.0/security-groups/{id}", "get", shown.status, shown.body)
    missing = await api.get("/v2.0/networks/nothing", headers=headers, expect=404)
    conform(doc, "/v2.0/networks/{id}", "get", 404, missing.body)


async def test_key_manager_answers_conform(make_api: MakeApi) -> None:
    """The key manager's version document, stores, pages and metadata match the document."""
    key = base64.urlsafe_b64encode(bytes(range(32))).decode()
    api = await make_api(secret_keys=key)
    doc = (await api.get("/openapi.json", expect=200)).body

    async def check(method: str, template: str, path: str, body: Any = None) -> Any:
        op = doc["paths"][template][method.lower()]
        status = int(next(code for code in op["responses"] if code != "default"))
        reply = await api.call(method, path, body, expect=status)
        conform(doc, template, method.lower(), status, reply.body)
        return reply.body

    await check("GET", "/v1", "/v1")
    secret = {"name": "s", "payload": "hello", "payload_content_type": "text/plain"}
    ref = (await check("POST", "/v1/secrets", "/v1/secrets", secret))["secret_ref"]
    secret_id = ref.rsplit("/", 1)[-1]
    await check("GET", "/v1/secrets", "/v1/secrets")
    await check("GET", "/v1/secrets/{secret_id}", f"/v1/secrets/{secret_id}")
    container = {"name": "c", "type": "generic", "secret_refs": [{"name": "a", "secret_ref": ref}]}
    made = await check("POST", "/v1/containers", "/v1/containers", container)
    await check("GET", "/v1/containers/", "/v1/containers/")
    container_id = made["container_ref"].rsplit("/", 1)[-1]
    await check("GET", "/v1/containers/{container_id}", f"/v1/containers/{container_id}")
    missing = await api.get("/v1/secrets/nothing", expect=404)
    conform(doc, "/v1/secrets/{secret_id}", "get", 404, missing.body)
