"""``/lbaas/l7policies``: CRUD (positions are kept 1..N per listener)."""

from __future__ import annotations

from aiohttp import web

from services.api.domain.kinds import L7POLICY
from services.api.http import reading, writing
from services.api.http.context import request_context
from services.api.http.deps import USECASES
from services.api.http.routing import ApiRouter
from services.api.http.schemas import parse_body
from services.api.http.schemas.l7 import L7PolicyCreate, L7PolicyUpdate

KIND = L7POLICY
ID = "l7policy_id"


async def create(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    body = parse_body(L7PolicyCreate, KIND.singular, await request.read())
    created = await request.app[USECASES].create_l7policy(
        ctx, body.model_dump(mode="json", exclude_unset=True), writing.metadata(request, ctx)
    )
    return writing.answer(created.outcome, KIND, created.resource_id, 201)


def register(api: ApiRouter) -> None:
    tag = "l7policies"
    one = f"/l7policies/{{{ID}}}"
    api.lbaas(
        "GET",
        "/l7policies",
        reading.listing(KIND),
        summary="List L7 policies",
        tag=tag,
        response_key=KIND.plural,
    )
    api.lbaas(
        "POST",
        "/l7policies",
        create,
        summary="Create an L7 policy",
        tag=tag,
        status=201,
        request=L7PolicyCreate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "GET",
        one,
        reading.show(KIND, ID),
        summary="Show an L7 policy",
        tag=tag,
        response_key=KIND.singular,
    )
    api.lbaas(
        "PUT",
        one,
        writing.updater(KIND, L7PolicyUpdate, ID),
        summary="Update an L7 policy",
        tag=tag,
        request=L7PolicyUpdate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "DELETE", one, writing.deleter(KIND, ID), summary="Delete an L7 policy", tag=tag, status=204
    )
