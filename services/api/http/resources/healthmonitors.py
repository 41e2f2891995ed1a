"""``/lbaas/healthmonitors``: CRUD (one monitor per pool)."""

from __future__ import annotations

from aiohttp import web

from services.api.domain.kinds import HEALTHMONITOR
from services.api.http import reading, writing
from services.api.http.context import request_context
from services.api.http.deps import USECASES
from services.api.http.routing import ApiRouter
from services.api.http.schemas import parse_body
from services.api.http.schemas.healthmonitor import HealthMonitorCreate, HealthMonitorUpdate

KIND = HEALTHMONITOR
ID = "healthmonitor_id"


async def create(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    body = parse_body(HealthMonitorCreate, KIND.singular, await request.read())
    created = await request.app[USECASES].create_healthmonitor(
        ctx, body.model_dump(mode="json", exclude_unset=True), writing.metadata(request, ctx)
    )
    return writing.answer(created.outcome, KIND, created.resource_id, 201)


def register(api: ApiRouter) -> None:
    tag = "healthmonitors"
    one = f"/healthmonitors/{{{ID}}}"
    api.lbaas(
        "GET",
        "/healthmonitors",
        reading.listing(KIND),
        summary="List health monitors",
        tag=tag,
        response_key=KIND.plural,
    )
    api.lbaas(
        "POST",
        "/healthmonitors",
        create,
        summary="Create a health monitor",
        tag=tag,
        status=201,
        request=HealthMonitorCreate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "GET",
        one,
        reading.show(KIND, ID),
        summary="Show a health monitor",
        tag=tag,
        response_key=KIND.singular,
    )
    api.lbaas(
        "PUT",
        one,
        writing.updater(KIND, HealthMonitorUpdate, ID),
        summary="Update a health monitor",
        tag=tag,
        request=HealthMonitorUpdate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "DELETE",
        one,
        writing.deleter(KIND, ID),
        summary="Delete a health monitor",
        tag=tag,
        status=204,
    )
