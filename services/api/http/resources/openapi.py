"""``GET /openapi.json`` (OpenAPI 3.1 of every registered route) and ``GET /docs`` (the same,
as a self-contained HTML page rendered here: no script, no external asset).

The document is built from ``ApiRouter.specs`` when first asked for, so it covers every module
registered in ``app.ROUTE_MODULES`` (Octavia, Keystone, Neutron) whatever their order. Request
bodies are the pydantic schemas the handlers validate with; a GET answering a kind's plural
envelope is a list and takes Octavia's paging, sorting and field parameters.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web
from pydantic.json_schema import models_json_schema

from services.api.domain.kinds import AMPHORA, CATALOG_KINDS, KINDS
from services.api.http.reading import base_url
from services.api.http.responses import encoded
from services.api.http.routing import ApiRouter, RouteSpec

TITLE: Final = "Fulcrum load balancing API"
VERSION: Final = "2.30"
_REF: Final = "#/components/schemas/{model}"
_PARAM: Final = re.compile(r"{(\w+)}")
# Envelope keys of list answers (these GETs take the list parameters) -> their links keys.
LIST_LINKS: Final = {
    **{k.plural: k.links_key for k in (*KINDS.values(), *CATALOG_KINDS.values(), AMPHORA)},
    "quotas": "quotas_links",
}
_FAULT: Final = {
    "type": "object",
    "description": "Octavia's fault body.",
    "properties": {
        "faultcode": {"type": "string", "enum": ["Client", "Server"]},
        "faultstring": {"type": "string"},
        "debuginfo": {"type": ["string", "null"]},
    },
    "required": ["faultcode", "faultstring", "debuginfo"],
}
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


def _success(spec: RouteSpec) -> dict[str, Any]:
    if spec.status == 204:
        return {"description": "No content."}
    answer: dict[str, Any] = {"description": spec.summary}
    if spec.response_key is not None:
        links = LIST_LINKS.get(spec.response_key)
        if links is not None:
            body: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
        else:
            body = {"type": ["object", "array"]}
        properties = {spec.response_key: body}
        if links is not None:
            properties[links] = _LINKS
        answer["content"] = {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": properties,
                    "required": [spec.response_key],
                }
            }
        }
    return answer


def build_document(specs: Sequence[RouteSpec], server: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``specs``, served from ``server``."""
    models = sorted({s.request for s in specs if s.request is not None}, key=lambda m: m.__name__)
    refs, top = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    schemas: dict[str, Any] = {**top.get("$defs", {}), "Fault": _FAULT}
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for spec in specs:
        operation: dict[str, Any] = {
            "operationId": _operation_id(spec.method, spec.path, taken),
            "summary": spec.summary,
            "tags": [spec.tag],
            "responses": {
                str(spec.status): _success(spec),
                "default": {
                    "description": "An error (Octavia's fault body; Keystone's for identity).",
                    "content": {
                        "application/json": {"schema": {"$ref": _REF.format(model="Fault")}}
                    },
                },
            },
        }
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
        "components": {"schemas": schemas},
    }


# --- the browsable page -----------------------------------------------------------------------

_STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0 0 2em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0} code{font-size:.95em}
.get{color:#0a6} .post{color:#06c} .put{color:#a60} .delete{color:#c03} .head{color:#666}
"""


def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f'<a href="#schema-{html.escape(name)}">{html.escape(name)}</a>'
    if "anyOf" in schema:
        return " | ".join(_type_of(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(html.escape(json.dumps(v)) for v in schema["enum"])
    return html.escape(str(kind))


_RULES: Final = ("minimum", "maximum", "minLength", "maxLength", "pattern", "default")


def _rules(schema: dict[str, Any]) -> str:
    found = {k: schema[k] for k in _RULES if k in schema}
    for option in schema.get("anyOf", []):
        found.update({k: option[k] for k in _RULES if k in option})
    return ", ".join(f"{k} {html.escape(json.dumps(v))}" for k, v in found.items())


def render_page(document: dict[str, Any]) -> str:
    """The document as one HTML page: the operations, then every request schema."""
    rows = []
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            request = _type_of(body["schema"]) if body else ""
            if body and "properties" in body["schema"]:
                ((envelope, inner),) = body["schema"]["properties"].items()
                request = f"<code>{{&quot;{html.escape(envelope)}&quot;: </code>"
                request += f"{_type_of(inner)}<code>}}</code>"
            codes = ", ".join(c for c in op["responses"] if c != "default")
            rows.append(
                f'<tr><td class="{method}"><b>{method.upper()}</b></td>'
                f"<td><code>{html.escape(path)}</code></td><td>{html.escape(op['summary'])}</td>"
                f"<td>{html.escape(', '.join(op['tags']))}</td><td>{request}</td>"
                f"<td>{codes}</td></tr>"
            )
    sections = []
    for name, schema in document["components"]["schemas"].items():
        required = set(schema.get("required", []))
        props = "".join(
            f"<tr><td><code>{html.escape(prop)}</code></td><td>{_type_of(sub)}</td>"
            f"<td>{'yes' if prop in required else ''}</td><td>{_rules(sub)}</td></tr>"
            for prop, sub in schema.get("properties", {}).items()
        )
        doc = html.escape(schema.get("description", ""))
        sections.append(
            f'<h3 id="schema-{html.escape(name)}">{html.escape(name)}</h3><p>{doc}</p>'
            "<table><tr><th>attribute</th><th>type</th><th>required</th><th>rules</th></tr>"
            f"{props}</table>"
        )
    info = document["info"]
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(info['title'])}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(info['title'])} {html.escape(info['version'])}</h1>"
        f"<p>{html.escape(info['description'])}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>'
        "<h2>Operations</h2><table><tr><th>method</th><th>path</th><th>summary</th><th>tag</th>"
        f"<th>request body</th><th>success</th></tr>{''.join(rows)}</table>"
        f"<h2>Request schemas</h2>{''.join(sections)}</body></html>"
    )


def register(api: ApiRouter) -> None:
    """Serves the specs ``api`` holds when asked (so modules registered later are included)."""

    built: list[dict[str, Any]] = []  # the document, built on first use (server left out)

    def document(request: web.Request) -> dict[str, Any]:
        if not built:
            built.append(build_document(api.specs, ""))
        return {**built[0], "servers": [{"url": base_url(request)}]}

    async def openapi_json(request: web.Request) -> web.StreamResponse:
        return encoded(document(request))

    async def docs(request: web.Request) -> web.StreamResponse:
        return web.Response(text=render_page(document(request)), content_type="text/html")

    api.exact("GET", "/openapi.json", openapi_json, summary="This OpenAPI document", tag="docs")
    api.exact("GET", "/docs", docs, summary="This API as an HTML page", tag="docs")
