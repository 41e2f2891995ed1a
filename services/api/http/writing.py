"""What write handlers share: the event metadata of a request and the answer bodies."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from libs.common.domain.model import LoadBalancerState
from libs.common.events import Metadata
from libs.common.readmodel import resource_bodies
from libs.common.repository import Outcome
from libs.common.telemetry import current_traceparent
from services.api.domain.kinds import Kind
from services.api.domain.policy import RequestContext
from services.api.http.bodies import read_input
from services.api.http.context import request_context
from services.api.http.deps import USECASES
from services.api.http.errors import REQUEST_ID
from services.api.http.responses import empty, enveloped
from services.api.http.routing import path_id
from services.api.http.schemas import Input


def metadata(request: web.Request, ctx: RequestContext) -> Metadata:
    """Correlation is the request id; the actor is the caller."""
    return Metadata(
        correlation_id=request.get(REQUEST_ID),
        actor=f"api:{ctx.user_id or ctx.project_id or 'anonymous'}",
        project_id=ctx.project_id,
        traceparent=current_traceparent(),
    )


def body_of(outcome: Outcome, kind: Kind, resource_id: str) -> dict[str, Any]:
    return resource_bodies(outcome.state)[kind.key][resource_id]


def answer(outcome: Outcome, kind: Kind, resource_id: str, status: int) -> web.Response:
    """``{"<singular>": body}`` of the resource as the command left it."""
    return enveloped(kind.singular, json.dumps(body_of(outcome, kind, resource_id)), status)


def full_graph(state: LoadBalancerState) -> dict[str, Any]:
    """Octavia's answer to a single-call create: the LB with full listeners and pools."""
    bodies = resource_bodies(state)
    assert state.loadbalancer is not None
    lb = dict(bodies["loadbalancer"][state.loadbalancer.id])

    def policy(policy_id: str) -> dict[str, Any]:
        body = dict(bodies["l7policies"][policy_id])
        body["rules"] = [bodies["l7rules"][r["id"]] for r in body["rules"]]
        return body

    def listener(listener_id: str) -> dict[str, Any]:
        body = dict(bodies["listeners"][listener_id])
        body["l7policies"] = [policy(p["id"]) for p in body["l7policies"]]
        return body

    def pool(pool_id: str) -> dict[str, Any]:
        body = dict(bodies["pools"][pool_id])
        body["members"] = [bodies["members"][m["id"]] for m in body["members"]]
        hm_id = body.get("healthmonitor_id")
        body["healthmonitor"] = bodies["healthmonitors"][hm_id] if hm_id else None
        return body

    lb["listeners"] = [listener(item["id"]) for item in lb["listeners"]]
    lb["pools"] = [pool(item["id"]) for item in lb["pools"]]
    return lb


def updater(
    kind: Kind, schema: type[Input], id_param: str, parent_param: str | None = None
) -> Handler:
    """PUT on a child resource: 200 with its body."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        resource_id = path_id(request, id_param)
        body = await read_input(request, schema, kind.singular)
        parent_id = path_id(request, parent_param) if parent_param else None
        outcome = await request.app[USECASES].update_child(
            ctx, kind, resource_id, body.given(), metadata(request, ctx), parent_id
        )
        return answer(outcome, kind, resource_id, 200)

    return handler


def deleter(kind: Kind, id_param: str, parent_param: str | None = None) -> Handler:
    """DELETE on a child resource: 204."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        parent_id = path_id(request, parent_param) if parent_param else None
        await request.app[USECASES].delete_child(
            ctx, kind, path_id(request, id_param), metadata(request, ctx), parent_id
        )
        return empty(204)

    return handler
