"""``/lbaas/pools``: CRUD (a pool created with ``listener_id`` becomes its default pool)."""

from __future__ import annotations

from aiohttp import web

from services.api.domain.kinds import POOL
from services.api.http import reading, writing
from services.api.http.context import request_context
from services.api.http.deps import USECASES
from services.api.http.routing import ApiRouter
from services.api.http.schemas import parse_body
from services.api.http.schemas.pool import PoolCreate, PoolUpdate

KIND = POOL
ID = "pool_id"


async def create(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    body = parse_body(PoolCreate, KIND.singular, await request.read())
    created = await request.app[USECASES].create_pool(
        ctx, body.model_dump(mode="json", exclude_unset=True), writing.metadata(request, ctx)
    )
    return writing.answer(created.outcome, KIND, created.resource_id, 201)


def register(api: ApiRouter) -> None:
    tag = "pools"
    one = f"/pools/{{{ID}}}"
    api.lbaas(
        "GET",
        "/pools",
        reading.listing(KIND),
        summary="List pools",
        tag=tag,
        response_key=KIND.plural,
    )
    api.lbaas(
        "POST",
        "/pools",
        create,
        summary="Create a pool",
        tag=tag,
        status=201,
        request=PoolCreate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "GET",
        one,
        reading.show(KIND, ID),
        summary="Show a pool",
        tag=tag,
        response_key=KIND.singular,
    )
    api.lbaas(
        "PUT",
        one,
        writing.updater(KIND, PoolUpdate, ID),
        summary="Update a pool",
        tag=tag,
        request=PoolUpdate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "DELETE", one, writing.deleter(KIND, ID), summary="Delete a pool", tag=tag, status=204
    )
