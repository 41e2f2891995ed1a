"""``/lbaas/l7policies/{l7policy_id}/rules``: CRUD (envelopes ``rule``/``rules``)."""

from __future__ import annotations

from aiohttp import web

from services.api.domain.kinds import L7POLICY, L7RULE
from services.api.http import reading, writing
from services.api.http.context import request_context
from services.api.http.deps import USECASES
from services.api.http.routing import ApiRouter, path_id
from services.api.http.schemas import parse_body
from services.api.http.schemas.l7 import L7RuleCreate, L7RuleUpdate

KIND = L7RULE
ID = "l7rule_id"
POLICY_ID = "l7policy_id"


async def create(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    body = parse_body(L7RuleCreate, KIND.singular, await request.read())
    created = await request.app[USECASES].create_l7rule(
        ctx,
        path_id(request, POLICY_ID),
        body.model_dump(mode="json", exclude_unset=True),
        writing.metadata(request, ctx),
    )
    return writing.answer(created.outcome, KIND, created.resource_id, 201)


def register(api: ApiRouter) -> None:
    tag = "l7rules"
    many = f"/l7policies/{{{POLICY_ID}}}/rules"
    one = f"{many}/{{{ID}}}"
    api.lbaas(
        "GET",
        many,
        reading.listing(KIND, L7POLICY, POLICY_ID),
        summary="List a policy's rules",
        tag=tag,
        response_key=KIND.plural,
    )
    api.lbaas(
        "POST",
        many,
        create,
        summary="Create an L7 rule",
        tag=tag,
        status=201,
        request=L7RuleCreate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "GET",
        one,
        reading.show(KIND, ID, POLICY_ID),
        summary="Show an L7 rule",
        tag=tag,
        response_key=KIND.singular,
    )
    api.lbaas(
        "PUT",
        one,
        writing.updater(KIND, L7RuleUpdate, ID, POLICY_ID),
        summary="Update an L7 rule",
        tag=tag,
        request=L7RuleUpdate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "DELETE",
        one,
        writing.deleter(KIND, ID, POLICY_ID),
        summary="Delete an L7 rule",
        tag=tag,
        status=204,
    )
