"""Generic read handlers: show one resource, list a collection (or a parent's children).

Reads come only from the views; bodies go out as stored text unless fields are selected.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Handler

from libs.common.errors import NotFound
from services.api.domain.kinds import Kind
from services.api.domain.policy import Action, enforce, visible_project
from services.api.domain.queries import ListQuery, Page
from services.api.http.context import request_context
from services.api.http.deps import SETTINGS, VIEWS
from services.api.http.query import fields_of, parse_list_query
from services.api.http.responses import enveloped, raw_json, select_fields
from services.api.http.routing import path_id


def base_url(request: web.Request) -> str:
    """Where links point: the configured public URL, else the request's own origin."""
    configured = request.app[SETTINGS].public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


def show(kind: Kind, id_param: str, parent_param: str | None = None) -> Handler:
    """GET one ``kind`` by ``id_param`` (404 if absent, DELETED or under another parent)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        resource_id = path_id(request, id_param)
        row = await request.app[VIEWS].get(kind, resource_id)
        if row is None or (
            parent_param is not None and row.parent_id != path_id(request, parent_param)
        ):
            raise NotFound.resource(kind.label, resource_id)
        enforce(ctx, Action.READ, row.project_id, hidden=NotFound.resource(kind.label, resource_id))
        fields = fields_of(request.query) if request.query_string else ()
        return enveloped(kind.singular, select_fields(row.body, fields))

    return handler


def listing(kind: Kind, parent: Kind | None = None, parent_param: str | None = None) -> Handler:
    """GET a collection with Octavia's filters, sorting, paging and field selection."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        views = request.app[VIEWS]
        query = parse_list_query(kind, request.query, request.app[SETTINGS].pagination_max_limit)
        if parent is not None and parent_param is not None:
            parent_id = path_id(request, parent_param)
            row = await views.get(parent, parent_id)
            if row is None:
                raise NotFound.resource(parent.label, parent_id)
            hidden = NotFound.resource(parent.label, parent_id)
            enforce(ctx, Action.READ, row.project_id, hidden=hidden)
            query = query.scoped(query.project_id, parent_id)
        else:
            query = query.scoped(visible_project(ctx, query.project_id))
        return page_response(request, query, await views.list_page(query))

    return handler


def unscoped_listing(kind: Kind, action: Action) -> Handler:
    """GET a collection that belongs to no project (flavors, zones, profiles, amphorae), for
    callers allowed ``action``; a ``project_id`` filter (amphorae) is an ordinary filter."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        enforce(ctx, action, ctx.project_id)
        query = parse_list_query(kind, request.query, request.app[SETTINGS].pagination_max_limit)
        return page_response(request, query, await request.app[VIEWS].list_page(query))

    return handler


def page_response(request: web.Request, query: ListQuery, page: Page) -> web.Response:
    """``{"<plural>": [...], "<links key>": [...]}`` with the query's field selection."""
    kind = query.kind
    bodies = [select_fields(b, query.fields) for b in page.bodies]
    links = json.dumps(page_links(request, query, page))
    return raw_json(f'{{"{kind.plural}": [{", ".join(bodies)}], "{kind.links_key}": {links}}}')


def page_links(request: web.Request, query: ListQuery, page: Page) -> list[dict[str, Any]]:
    """Octavia's ``<plural>_links``: "previous" after a marker, "next" when the page is full.

    The href is Octavia's: ``limit``, then ``sort`` and ``sort_key`` as given, then ``marker``
    (and ``page_reverse=True`` on "previous"), written raw. Fulcrum then also carries the
    filters, ``sort_dir`` and ``fields`` (percent-encoded), so that following a link keeps
    the list the caller asked for (Octavia drops them)."""
    if not page.ids:
        return []
    url = base_url(request) + request.path
    given = dict(query.link_params)
    leading = [("limit", str(query.limit))] if query.limit is not None else []
    leading += [(name, given[name]) for name in ("sort", "sort_key") if name in given]
    carried = [(k, v) for k, v in query.link_params if k not in ("sort", "sort_key")]
    tail = f"&{urlencode(carried)}" if carried else ""

    def href(*params: tuple[str, str]) -> str:
        return f"{url}?{'&'.join(f'{k}={v}' for k, v in (*leading, *params))}{tail}"

    links: list[dict[str, Any]] = []
    if query.marker is not None:
        previous = href(("marker", page.ids[0]), ("page_reverse", "True"))
        links.append({"rel": "previous", "href": previous})
    if query.limit is not None and len(page.ids) >= query.limit:
        links.append({"rel": "next", "href": href(("marker", page.ids[-1]))})
    return links
