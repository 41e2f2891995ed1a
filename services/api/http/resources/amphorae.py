"""``/octavia/amphorae`` (admin only): list, show, stats, failover, config push, delete.

Reads come from ``amphora_view`` (lists hide DELETED amphorae, a show does not) and
``listener_stats``; writes go through ``AmphoraAdministration``.
"""

from __future__ import annotations

from aiohttp import web

from libs.common.errors import NotFound
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from libs.common.service import DB
from services.api.domain.amphora_usecases import AmphoraAdministration
from services.api.domain.kinds import AMPHORA
from services.api.domain.policy import Action, enforce
from services.api.http import reading, writing
from services.api.http.context import request_context
from services.api.http.deps import VIEWS
from services.api.http.query import fields_of
from services.api.http.responses import empty, encoded, enveloped, select_fields
from services.api.http.routing import ApiRouter, path_id

KIND = AMPHORA
ID = "amphora_id"


def administration(request: web.Request) -> AmphoraAdministration:
    store = PostgresEventStore(request.app[DB])
    return AmphoraAdministration(
        LoadBalancerRepository(store), AmphoraRepository(store), request.app[VIEWS]
    )


async def show(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    enforce(ctx, Action.ADMIN, ctx.project_id)
    amphora_id = path_id(request, ID)
    row = await request.app[VIEWS].amphora(amphora_id)
    if row is None:
        raise NotFound.resource(KIND.label, amphora_id)
    fields = fields_of(request.query) if request.query_string else ()
    return enveloped(KIND.singular, select_fields(row.body, fields))


async def stats(request: web.Request) -> web.StreamResponse:
    """``{"amphora_stats": [...]}``: one entry per listener, as the health service stored it."""
    ctx = await request_context(request)
    enforce(ctx, Action.ADMIN, ctx.project_id)
    amphora_id = path_id(request, ID)
    views = request.app[VIEWS]
    if await views.amphora(amphora_id) is None:
        raise NotFound.resource(KIND.label, amphora_id)
    return encoded({"amphora_stats": await views.amphora_stats(amphora_id)})


async def failover(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    await administration(request).failover(
        ctx, path_id(request, ID), writing.metadata(request, ctx)
    )
    return empty(202)


async def push_config(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    await administration(request).push_config(
        ctx, path_id(request, ID), writing.metadata(request, ctx)
    )
    return empty(202)


async def delete(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    await administration(request).delete(ctx, path_id(request, ID), writing.metadata(request, ctx))
    return empty(204)


def register(api: ApiRouter) -> None:
    tag = "amphorae"
    one = f"/amphorae/{{{ID}}}"
    api.octavia(
        "GET",
        "/amphorae",
        reading.unscoped_listing(KIND, Action.ADMIN),
        summary="List amphorae",
        tag=tag,
        response_key=KIND.plural,
    )
    api.octavia("GET", one, show, summary="Show an amphora", tag=tag, response_key=KIND.singular)
    api.octavia(
        "GET",
        f"{one}/stats",
        stats,
        summary="Amphora statistics",
        tag=tag,
        response_key="amphora_stats",
    )
    api.octavia(
        "PUT", f"{one}/failover", failover, summary="Fail over an amphora", tag=tag, status=202
    )
    api.octavia(
        "PUT",
        f"{one}/config",
        push_config,
        summary="Push an amphora's configuration again",
        tag=tag,
        status=202,
    )
    api.octavia("DELETE", one, delete, summary="Delete an amphora in ERROR", tag=tag, status=204)
