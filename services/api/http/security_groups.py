"""The Neutron security-group subset: ``/v2.0/security-groups`` and
``/v2.0/security-group-rules``, also under ``/v2`` (create, list, show, update a group,
delete), project-scoped, in Neutron's bodies and error format
``{"NeutronError": {"type", "message", "detail"}}``.

Lists honour equality filters on any top-level attribute (repeated: any of the values) and
``fields``; other projects' groups are absent for non-admins.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from libs.common.errors import DomainError
from libs.common.service import DB
from services.api.adapters.security_groups import PostgresSecurityGroups
from services.api.domain.policy import RequestContext
from services.api.domain.security_groups import (
    NeutronRefusal,
    SecurityGroupAdministration,
    bad_request,
    group_body,
    rule_body,
)
from services.api.http import writing
from services.api.http.context import request_context
from services.api.http.neutron import neutron_error
from services.api.http.routing import ApiRouter, path_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GROUPS: Final = "/security-groups"
RULES: Final = "/security-group-rules"
# Neutron's prefix, and /v2 too, as the other Neutron collections (Octavia's version document
# links there).
PREFIXES: Final = ("/v2.0", "/v2")
# Query parameters that are not attribute filters.
_NOT_FILTERS: Final = frozenset(
    {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse", "verbose"}
)
_GENERIC_TYPES: Final = {
    400: "HTTPBadRequest",
    401: "HTTPUnauthorized",
    403: "HTTPForbidden",
    404: "HTTPNotFound",
    409: "HTTPConflict",
    503: "HTTPServiceUnavailable",
}


def _neutron(handler: Handler) -> Handler:
    """Answer DomainErrors in Neutron's error body (the Octavia middleware sees none)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except NeutronRefusal as exc:
            return neutron_error(exc.http_status, exc.kind, exc.message)
        except DomainError as exc:
            if exc.http_status == 401:
                raise
            kind = _GENERIC_TYPES.get(exc.http_status, "HTTPError")
            return neutron_error(exc.http_status, kind, exc.message)

    return handle


def _administration(
    request: web.Request,
) -> tuple[SecurityGroupAdministration, PostgresSecurityGroups]:
    groups = PostgresSecurityGroups(request.app[DB])
    return SecurityGroupAdministration(groups), groups


async def _body(request: web.Request, key: str) -> dict[str, Any]:
    try:
        data = json.loads(await request.read() or b"null")
    except ValueError:
        raise bad_request("Malformed request body") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), dict):
        raise bad_request("Resource body required")
    found: dict[str, Any] = data[key]
    return found


def _matches(body: dict[str, Any], request: web.Request) -> bool:
    for key in set(request.query.keys()) - _NOT_FILTERS:
        wanted = request.query.getall(key)
        value = body.get(key)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if value is None:
            text = ""
        if text not in wanted:
            return False
    return True


def _fields(body: dict[str, Any], request: web.Request) -> dict[str, Any]:
    fields = request.query.getall("fields", [])
    return {k: v for k, v in body.items() if k in fields} if fields else body


def _scope(ctx: RequestContext) -> str | None:
    """The project a caller's lists are restricted to (None: every project)."""
    return None if ctx.admin or ctx.reads_globally else (ctx.project_id or "")


async def list_groups(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    _, groups = _administration(request)
    bodies = await groups.group_bodies(_scope(ctx))
    found = [_fields(b, request) for b in bodies if _matches(b, request)]
    return web.json_response({"security_groups": found})


async def show_group(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    admin, _ = _administration(request)
    group = await admin.visible(ctx, path_id(request, "id"))
    return web.json_response({"security_group": _fields(group_body(group), request)})


async def create_group(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    fields = await _body(request, "security_group")
    admin, _ = _administration(request)
    group = await admin.create_group(ctx, fields, writing.metadata(request, ctx))
    return web.json_response({"security_group": group_body(group)}, status=201)


async def update_group(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    fields = await _body(request, "security_group")
    admin, _ = _administration(request)
    group = await admin.update_group(
        ctx, path_id(request, "id"), fields, writing.metadata(request, ctx)
    )
    return web.json_response({"security_group": group_body(group)})


async def delete_group(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    admin, _ = _administration(request)
    await admin.delete_group(ctx, path_id(request, "id"), writing.metadata(request, ctx))
    return web.Response(status=204)


async def list_rules(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    _, groups = _administration(request)
    bodies = await groups.rule_bodies(_scope(ctx))
    found = [_fields(b, request) for b in bodies if _matches(b, request)]
    return web.json_response({"security_group_rules": found})


async def show_rule(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    admin, _ = _administration(request)
    rule = await admin.visible_rule(ctx, path_id(request, "id"))
    return web.json_response({"security_group_rule": _fields(rule_body(rule), request)})


async def create_rule(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    fields = await _body(request, "security_group_rule")
    admin, _ = _administration(request)
    rule = await admin.create_rule(ctx, fields, writing.metadata(request, ctx))
    return web.json_response({"security_group_rule": rule_body(rule)}, status=201)


async def delete_rule(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    admin, _ = _administration(request)
    await admin.delete_rule(ctx, path_id(request, "id"), writing.metadata(request, ctx))
    return web.Response(status=204)


def register(api: ApiRouter) -> None:
    routes: list[tuple[str, str, Handler, str, int]] = [
        ("GET", GROUPS, list_groups, "List security groups", 200),
        ("POST", GROUPS, create_group, "Create a security group", 201),
        ("GET", f"{GROUPS}/{{id}}", show_group, "Show a security group", 200),
        ("PUT", f"{GROUPS}/{{id}}", update_group, "Update a security group", 200),
        ("DELETE", f"{GROUPS}/{{id}}", delete_group, "Delete a security group", 204),
        ("GET", RULES, list_rules, "List security group rules", 200),
        ("POST", RULES, create_rule, "Create a security group rule", 201),
        ("GET", f"{RULES}/{{id}}", show_rule, "Show a security group rule", 200),
        ("DELETE", f"{RULES}/{{id}}", delete_rule, "Delete a security group rule", 204),
    ]
    for prefix in PREFIXES:
        for method, path, handler, summary, status in routes:
            api.exact(
                method,
                prefix + path,
                _neutron(handler),
                summary=summary,
                tag="network",
                status=status,
            )
