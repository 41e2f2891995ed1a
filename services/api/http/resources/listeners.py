"""``/lbaas/listeners``: CRUD and stats."""

from __future__ import annotations

from aiohttp import web

from libs.common.errors import NotFound
from services.api.domain.kinds import LISTENER
from services.api.domain.policy import Action, enforce
from services.api.http import reading, writing
from services.api.http.context import request_context
from services.api.http.deps import USECASES, VIEWS
from services.api.http.responses import encoded
from services.api.http.routing import ApiRouter, path_id
from services.api.http.schemas import parse_body
from services.api.http.schemas.listener import ListenerCreate, ListenerUpdate

KIND = LISTENER
ID = "listener_id"


async def create(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    body = parse_body(ListenerCreate, KIND.singular, await request.read())
    created = await request.app[USECASES].create_listener(
        ctx, body.model_dump(mode="json", exclude_unset=True), writing.metadata(request, ctx)
    )
    return writing.answer(created.outcome, KIND, created.resource_id, 201)


async def stats(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    listener_id = path_id(request, ID)
    row = await request.app[VIEWS].get(KIND, listener_id)
    if row is None:
        raise NotFound.resource(KIND.label, listener_id)
    enforce(ctx, Action.READ, row.project_id, hidden=NotFound.resource(KIND.label, listener_id))
    return encoded({"stats": await request.app[VIEWS].stats(listener_id=listener_id)})


def register(api: ApiRouter) -> None:
    tag = "listeners"
    one = f"/listeners/{{{ID}}}"
    api.lbaas(
        "GET",
        "/listeners",
        reading.listing(KIND),
        summary="List listeners",
        tag=tag,
        response_key=KIND.plural,
    )
    api.lbaas(
        "POST",
        "/listeners",
        create,
        summary="Create a listener",
        tag=tag,
        status=201,
        request=ListenerCreate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "GET",
        one,
        reading.show(KIND, ID),
        summary="Show a listener",
        tag=tag,
        response_key=KIND.singular,
    )
    api.lbaas(
        "PUT",
        one,
        writing.updater(KIND, ListenerUpdate, ID),
        summary="Update a listener",
        tag=tag,
        request=ListenerUpdate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "DELETE", one, writing.deleter(KIND, ID), summary="Delete a listener", tag=tag, status=204
    )
    api.lbaas(
        "GET", f"{one}/stats", stats, summary="Listener statistics", tag=tag, response_key="stats"
    )
