"""``GET /openapi.json`` (OpenAPI 3.1 of every registered route) and ``GET /docs`` (Swagger UI
on that document, its files served from here: nothing is loaded from outside).

The document is built from ``ApiRouter.specs`` when first asked for, so it covers every module
registered in ``app.ROUTE_MODULES`` (Octavia, Keystone, Neutron) whatever their order. Request
bodies are the pydantic schemas the handlers validate with; answers are the models of
``schemas.views`` under their envelope key (a list, with its links, for a kind's plural); any
other status is an error in the shape of the path's API (Octavia's fault, pecan's, Keystone's,
Neutron's). A GET answering a kind's plural envelope takes Octavia's paging, sorting and field
parameters. Every operation but the version documents, token issue and these docs requires
the ``X-Auth-Token`` header (an apiKey security scheme).
"""

from __future__ import annotations

import html
import importlib.resources
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from pydantic.json_schema import models_json_schema

from libs.common.errors import NotFound
from libs.common.events.visibility import FEED_PATH
from services.api.domain.kinds import AMPHORA, CATALOG_KINDS, KINDS
from services.api.http.errors import KEY_MANAGER_PREFIX
from services.api.http.neutron import RESOURCES as NEUTRON_RESOURCES
from services.api.http.reading import base_url
from services.api.http.responses import encoded
from services.api.http.routing import ApiRouter, RouteSpec
from services.api.http.schemas.views import (
    LIST_BODIES,
    LOADBALANCER_GRAPH,
    RESPONSE_BODIES,
    VERSIONS,
)

TITLE: Final = "Fulcrum load balancing API"
VERSION: Final = "2.30"
_REF: Final = "#/components/schemas/{model}"
_PARAM: Final = re.compile(r"{(\w+)}")
# Envelope keys of list answers (these GETs take the list parameters) -> their links keys.
LIST_LINKS: Final = {
    **{k.plural: k.links_key for k in (*KINDS.values(), *CATALOG_KINDS.values(), AMPHORA)},
    "quotas": "quotas_links",
}
_ERRORS: Final[dict[str, dict[str, Any]]] = {
    "Fault": {
        "type": "object",
        "description": "Octavia's fault body (WSME): bad input, conflicts, missing resources.",
        "properties": {
            "faultcode": {"type": "string", "enum": ["Client", "Server"]},
            "faultstring": {"type": "string"},
            "debuginfo": {"type": ["string", "null"]},
        },
        "required": ["faultcode", "faultstring", "debuginfo"],
        "additionalProperties": False,
    },
    "PecanError": {
        "type": "object",
        "description": "The framework's body: unrouted paths, methods not allowed, bad paging "
        "arguments; the key manager's errors have the same shape.",
        "properties": {
            "code": {"type": "integer"},
            "title": {"type": "string"},
            "description": {"type": ["string", "null"]},
        },
        "required": ["code", "title", "description"],
        "additionalProperties": False,
    },
    "KeystoneError": {
        "type": "object",
        "description": "Keystone's body: every 401, and the identity API's errors.",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer"},
                    "title": {"type": "string"},
                    "message": {"type": "string"},
                },
                "required": ["code", "title", "message"],
            }
        },
        "required": ["error"],
        "additionalProperties": False,
    },
    "NeutronError": {
        "type": "object",
        "description": "Neutron's body, for the networking subset.",
        "properties": {
            "NeutronError": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                    "detail": {"type": "string"},
                },
                "required": ["type", "message", "detail"],
            }
        },
        "required": ["NeutronError"],
        "additionalProperties": False,
    },
    "NotAcceptable": {
        "type": "object",
        "description": "The 406 for an Accept that excludes application/json (API-WG errors).",
        "properties": {"errors": {"type": "array", "items": {"type": "object"}}},
        "required": ["errors"],
        "additionalProperties": False,
    },
}
_OCTAVIA_ERRORS: Final = ("Fault", "PecanError", "KeystoneError", "NotAcceptable")
# The error bodies each part of the API answers with, by path prefix (first match wins).
_ERROR_SHAPES: Final = (
    ("/v3", ("KeystoneError", "PecanError", "Fault", "NotAcceptable")),
    ("/v1", ("PecanError", "KeystoneError")),
    ("/v2/lbaas", _OCTAVIA_ERRORS),
    ("/v2/octavia", _OCTAVIA_ERRORS),
    ("/v2", ("NeutronError", *_OCTAVIA_ERRORS)),
    ("/v2.0", ("NeutronError", *_OCTAVIA_ERRORS)),
    ("", _OCTAVIA_ERRORS),
)
SECURITY_SCHEME: Final = "X-Auth-Token"
# Operations served without a token: version documents, token issue, this document.
_PUBLIC: Final = frozenset({"versions", "docs"})
_PUBLIC_OPERATIONS: Final = frozenset(
    {("GET", "/v3"), ("GET", "/v3/"), ("POST", "/v3/auth/tokens"), ("GET", "/v1"), ("GET", "/v1/")}
)
_LINKS: Final = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"href": {"type": "string"}, "rel": {"type": "string"}},
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_FIELDS_PARAM: Final = {
    **_query(
        "fields",
        {"type": "array", "items": {"type": "string"}},
        "Attributes to return (repeat the parameter).",
    ),
    "style": "form",
    "explode": True,
}
_LIST_PARAMS: Final = [
    _query("limit", {"type": "integer", "minimum": 0}, "Page size (0: the maximum)."),
    _query("marker", {"type": "string"}, "Id of the last item of the previous page."),
    _query("page_reverse", {"type": "boolean"}, "Page backwards from the marker."),
    _query("sort", {"type": "string"}, "key:asc|desc,... (created_at,id are appended)."),
    _FIELDS_PARAM,
]


def _operation_id(method: str, path: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "_", f"{method.lower()} {path.lower()}").strip("_")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def _success(spec: RouteSpec, body_refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The success answer: ``{"<response_key>": <body or list of bodies>[, "<links>": ...]}``
    with the body's schema from ``RESPONSE_BODIES``; without a response key, the content fixed
    by the path, the version documents, or ``_envelope``'s (no content where none is known)."""
    answer: dict[str, Any] = {"description": spec.summary}
    if spec.path in _CONTENT_BY_PATH:
        return {**answer, "content": _CONTENT_BY_PATH[spec.path]}
    if spec.status == 204 or spec.method == "HEAD":
        return {"description": "No content."} if spec.status == 204 else answer
    if spec.response_key is None:
        schema: dict[str, Any] | None = _envelope(spec)
        if spec.tag == "versions":
            schema = body_refs["versions"] if spec.path == "/" else {"const": "v2"}
        if schema is not None and spec.status != 202:
            answer["content"] = {"application/json": {"schema": schema}}
        return answer
    links = LIST_LINKS.get(spec.response_key)
    item: dict[str, Any] = body_refs.get(spec.response_key, {"type": "object"})
    if spec.response_key == "loadbalancer" and spec.method == "POST":
        item = {"anyOf": [item, body_refs["loadbalancer_graph"]]}
    if links is not None or spec.response_key in LIST_BODIES:
        item = {"type": "array", "items": item}
    properties: dict[str, Any] = {spec.response_key: item}
    if links is not None:
        properties[links] = _LINKS
    answer["content"] = {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": properties,
                "required": [spec.response_key],
                "additionalProperties": False,
            }
        }
    }
    return answer


def _envelope(spec: RouteSpec) -> dict[str, Any] | None:
    """The Neutron and Keystone answers: their envelope key (a list or one object; other keys,
    such as links, allowed); the key manager's bodies; None (no content claimed) for a route
    none of these knows."""
    path = spec.path if spec.path.startswith("/v3") else re.sub(r"^/v2(\.0)?", "", spec.path)
    if spec.method == "POST" and path in _NEUTRON_ENVELOPES:
        path += "/{id}"  # a create answers the one object under the singular key
    if _under(spec.path, KEY_MANAGER_PREFIX):
        return _key_manager_body(spec)
    found = _KEYSTONE_ENVELOPES.get(path) or _NEUTRON_ENVELOPES.get(path)
    if found is None:
        return None
    key, many = found
    value = {"type": "array", "items": {"type": "object"}} if many else {"type": "object"}
    return {"type": "object", "properties": {key: value}, "required": [key]}


def _key_manager_body(spec: RouteSpec) -> dict[str, Any]:
    """Barbican's answers: the version document, a reference to what a POST stored, a page
    (items and total), or one secret's or container's metadata with its reference."""
    path = spec.path.rstrip("/")
    kind = path.split("/")[2] if path.count("/") >= 2 else ""
    singular = kind.removesuffix("s")
    if path == KEY_MANAGER_PREFIX:
        required: dict[str, Any] = {"version": {"type": "object"}}
    elif spec.method == "POST":
        required = {f"{singular}_ref": {"type": "string"}}
    elif path.count("/") == 2:
        required = {kind: {"type": "array", "items": {"type": "object"}}, "total": _INTEGER}
    else:
        required = {f"{singular}_ref": {"type": "string"}}
    return {"type": "object", "properties": required, "required": list(required)}


_INTEGER: Final = {"type": "integer"}


def _neutron_envelopes() -> dict[str, tuple[str, bool]]:
    """Path below the version -> (envelope key, is a list) of the Neutron collections."""
    found: dict[str, tuple[str, bool]] = {}
    for resource in NEUTRON_RESOURCES:
        found[f"/{resource.path}"] = (resource.collection, True)
        found[f"/{resource.path}/{{id}}"] = (resource.member, False)
    for plural, singular in (
        ("security-groups", "security_group"),
        ("security-group-rules", "security_group_rule"),
    ):
        found[f"/{plural}"] = (plural.replace("-", "_"), True)
        found[f"/{plural}/{{id}}"] = (singular, False)
    return found


_NEUTRON_ENVELOPES: Final = _neutron_envelopes()
_KEYSTONE_ENVELOPES: Final = {
    "/v3": ("version", False),
    "/v3/": ("version", False),
    "/v3/auth/tokens": ("token", False),
    "/v3/auth/projects": ("projects", True),
    "/v3/auth/domains": ("domains", True),
    "/v3/auth/catalog": ("catalog", True),
    "/v3/users": ("users", True),
    "/v3/users/{user}": ("user", False),
    "/v3/users/{user}/projects": ("projects", True),
    "/v3/projects": ("projects", True),
    "/v3/projects/{project}": ("project", False),
    "/v3/roles": ("roles", True),
    "/v3/roles/{role}": ("role", False),
    "/v3/domains": ("domains", True),
    "/v3/domains/{domain}": ("domain", False),
    "/v3/role_assignments": ("role_assignments", True),
}


def _errors(path: str) -> dict[str, Any]:
    """Any status not listed: the error bodies served under ``path``."""
    names = next(shapes for prefix, shapes in _ERROR_SHAPES if _under(path, prefix))
    return {
        "description": "An error; its body in the shape of the API the path belongs to.",
        "content": {
            "application/json": {
                "schema": {"anyOf": [{"$ref": _REF.format(model=name)} for name in names]}
            }
        },
    }


def _under(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _authenticated(spec: RouteSpec) -> bool:
    return spec.tag not in _PUBLIC and (spec.method, spec.path) not in _PUBLIC_OPERATIONS


def build_document(specs: Sequence[RouteSpec], server: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``specs``, served from ``server``."""
    requests = sorted({s.request for s in specs if s.request is not None}, key=lambda m: m.__name__)
    bodies = {**RESPONSE_BODIES, "loadbalancer_graph": LOADBALANCER_GRAPH, "versions": VERSIONS}
    responses = sorted(set(bodies.values()), key=lambda m: m.__name__)
    refs, top = models_json_schema(
        [(m, "validation") for m in requests] + [(m, "serialization") for m in responses],
        ref_template=_REF,
    )
    body_refs = {key: refs[(model, "serialization")] for key, model in bodies.items()}
    schemas: dict[str, Any] = {**top.get("$defs", {}), **_ERRORS}
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for spec in specs:
        operation: dict[str, Any] = {
            "operationId": _operation_id(spec.method, spec.path, taken),
            "summary": spec.summary,
            "tags": [spec.tag],
            "responses": {
                str(spec.status): _success(spec, body_refs),
                "default": _errors(spec.path),
            },
        }
        if _authenticated(spec):
            operation["security"] = [{SECURITY_SCHEME: []}]
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(spec.path)
        ]
        if spec.method == "GET" and spec.response_key in LIST_LINKS:
            parameters += _LIST_PARAMS
        elif spec.method == "GET" and spec.response_key is not None:
            parameters.append(_FIELDS_PARAM)
        if parameters:
            operation["parameters"] = parameters
        if spec.request is not None:
            schema = refs[(spec.request, "validation")]
            if spec.envelope is not None:
                schema = {
                    "type": "object",
                    "properties": {spec.envelope: schema},
                    "required": [spec.envelope],
                    "additionalProperties": False,
                }
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
        paths.setdefault(spec.path, {})[spec.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": (
                "OpenStack Octavia v2 compatible. Every /v2/lbaas path is also served under "
                "/v2.0/lbaas, /v2 and /v2.0 (and with a .json suffix). Authenticate with "
                "X-Auth-Token (a token from POST /v3/auth/tokens, or the admin token)."
            ),
        },
        "servers": [{"url": server}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Auth-Token",
                    "description": "A Keystone token (POST /v3/auth/tokens) or the operator's "
                    "admin token.",
                }
            },
        },
    }


# --- the interactive viewer -------------------------------------------------------------------

# Swagger UI's files, from the pinned swagger-ui-py wheel (only its static assets are used).
SWAGGER_UI_DIR: Final = Path(str(importlib.resources.files("swagger_ui") / "static"))
# Swagger UI's configuration: the document it shows is this server's /openapi.json. A file of
# its own (no inline script), so that /docs works under a Content-Security-Policy of 'self'.
DOCS_SCRIPT: Final = "fulcrum-docs.js"
_DOCS_SCRIPT_TEXT: Final = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""
# The files /docs loads, by name -> content type (nothing else of the wheel is served).
DOCS_ASSETS: Final = {
    "swagger-ui.css": "text/css",
    "index.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    DOCS_SCRIPT: "text/javascript",
}
DOCS_PAGE: Final = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(TITLE)}</title>
<link rel="stylesheet" type="text/css" href="/docs/swagger-ui.css">
<link rel="stylesheet" type="text/css" href="/docs/index.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="/docs/favicon-16x16.png" sizes="16x16">
</head><body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js" charset="utf-8"></script>
<script src="/docs/swagger-ui-standalone-preset.js" charset="utf-8"></script>
<script src="/docs/{DOCS_SCRIPT}" charset="utf-8"></script>
</body></html>
"""
# Answers whose content is fixed by the path (the docs, a secret's payload).
_CONTENT_BY_PATH: Final[dict[str, dict[str, Any]]] = {
    "/openapi.json": {
        "application/json": {
            "schema": {"type": "object", "required": ["openapi", "info", "paths", "components"]}
        }
    },
    "/docs": {"text/html": {}},
    "/docs/{asset}": {content_type: {} for content_type in sorted(set(DOCS_ASSETS.values()))},
    "/v1/secrets/{secret_id}/payload": {"*/*": {}},
    FEED_PATH: {"text/event-stream": {}},
}


def register(api: ApiRouter) -> None:
    """Serves the specs ``api`` holds when asked (so modules registered later are included),
    and Swagger UI on ``/docs`` pointed at them."""

    built: list[dict[str, Any]] = []  # the document, built on first use (server left out)

    def document(request: web.Request) -> dict[str, Any]:
        if not built:
            built.append(build_document(api.specs, ""))
        return {**built[0], "servers": [{"url": base_url(request)}]}

    async def openapi_json(request: web.Request) -> web.StreamResponse:
        return encoded(document(request))

    async def docs(request: web.Request) -> web.StreamResponse:
        return web.Response(text=DOCS_PAGE, content_type="text/html")

    async def docs_asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["asset"]
        content_type = DOCS_ASSETS.get(name)
        if content_type is None:
            raise NotFound(f"Document {name} not found.")
        if name == DOCS_SCRIPT:
            return web.Response(text=_DOCS_SCRIPT_TEXT, content_type=content_type)
        return web.FileResponse(SWAGGER_UI_DIR / name, headers={"Content-Type": content_type})

    api.exact("GET", "/openapi.json", openapi_json, summary="This OpenAPI document", tag="docs")
    api.exact("GET", "/docs", docs, summary="This API in Swagger UI", tag="docs")
    api.exact("GET", "/docs/{asset}", docs_asset, summary="Swagger UI's files", tag="docs")
