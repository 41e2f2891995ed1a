"""``/lbaas/pools/{pool_id}/members``: CRUD and Octavia's batch replace (202)."""

from __future__ import annotations

from aiohttp import web

from services.api.domain.kinds import MEMBER, POOL
from services.api.http import reading, writing
from services.api.http.context import request_context
from services.api.http.deps import USECASES
from services.api.http.query import parse_bool
from services.api.http.responses import empty
from services.api.http.routing import ApiRouter, path_id
from services.api.http.schemas import parse_body, parse_document
from services.api.http.schemas.member import MemberCreate, MembersBatch, MemberUpdate

KIND = MEMBER
ID = "member_id"
POOL_ID = "pool_id"


async def create(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    body = parse_body(MemberCreate, KIND.singular, await request.read())
    created = await request.app[USECASES].create_member(
        ctx,
        path_id(request, POOL_ID),
        body.model_dump(mode="json", exclude_unset=True),
        writing.metadata(request, ctx),
    )
    return writing.answer(created.outcome, KIND, created.resource_id, 201)


async def replace(request: web.Request) -> web.StreamResponse:
    """Batch update: members matched by (address, protocol_port); 202 without a body."""
    ctx = await request_context(request)
    batch = parse_document(MembersBatch, "members", await request.read())
    raw = request.query.get("additive_only")
    additive = parse_bool(raw, "additive_only") if raw is not None else False
    await request.app[USECASES].replace_members(
        ctx,
        path_id(request, POOL_ID),
        [m.model_dump(mode="json", exclude_unset=True) for m in batch.members],
        additive,
        writing.metadata(request, ctx),
    )
    return empty(202)


def register(api: ApiRouter) -> None:
    tag = "members"
    many = f"/pools/{{{POOL_ID}}}/members"
    one = f"{many}/{{{ID}}}"
    api.lbaas(
        "GET",
        many,
        reading.listing(KIND, POOL, POOL_ID),
        summary="List a pool's members",
        tag=tag,
        response_key=KIND.plural,
    )
    api.lbaas(
        "POST",
        many,
        create,
        summary="Add a member",
        tag=tag,
        status=201,
        request=MemberCreate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "PUT",
        many,
        replace,
        summary="Batch update members (?additive_only=true)",
        tag=tag,
        status=202,
        request=MembersBatch,
    )
    api.lbaas(
        "GET",
        one,
        reading.show(KIND, ID, POOL_ID),
        summary="Show a member",
        tag=tag,
        response_key=KIND.singular,
    )
    api.lbaas(
        "PUT",
        one,
        writing.updater(KIND, MemberUpdate, ID, POOL_ID),
        summary="Update a member",
        tag=tag,
        request=MemberUpdate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "DELETE",
        one,
        writing.deleter(KIND, ID, POOL_ID),
        summary="Remove a member",
        tag=tag,
        status=204,
    )
