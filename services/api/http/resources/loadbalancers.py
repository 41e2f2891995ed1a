"""``/lbaas/loadbalancers``: CRUD, single-call create, cascade delete, status tree, stats,
failover."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from libs.common.errors import NotFound
from services.api.domain.kinds import LOADBALANCER
from services.api.domain.policy import Action, enforce
from services.api.http import reading, writing
from services.api.http.bodies import read_input
from services.api.http.context import request_context
from services.api.http.deps import USECASES, VIEWS
from services.api.http.query import parse_bool
from services.api.http.responses import empty, encoded
from services.api.http.routing import ApiRouter, path_id
from services.api.http.schemas.loadbalancer import LoadBalancerCreate, LoadBalancerUpdate

KIND = LOADBALANCER
ID = "loadbalancer_id"


async def create(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    body = await read_input(request, LoadBalancerCreate, KIND.singular)
    fields = body.model_dump(mode="json", exclude_unset=True)
    created = await request.app[USECASES].create_loadbalancer(
        ctx, fields, writing.metadata(request, ctx)
    )
    if fields.get("listeners") or fields.get("pools"):
        return encoded({KIND.singular: writing.full_graph(created.outcome.state)}, 201)
    return writing.answer(created.outcome, KIND, created.resource_id, 201)


async def update(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    lb_id = path_id(request, ID)
    body = await read_input(request, LoadBalancerUpdate, KIND.singular)
    outcome = await request.app[USECASES].update_loadbalancer(
        ctx, lb_id, body.given(), writing.metadata(request, ctx)
    )
    return writing.answer(outcome, KIND, lb_id, 200)


async def delete(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    raw = request.query.get("cascade")
    cascade = parse_bool(raw, "cascade") if raw is not None else False
    await request.app[USECASES].delete_loadbalancer(
        ctx, path_id(request, ID), cascade, writing.metadata(request, ctx)
    )
    return empty(204)


async def failover(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    await request.app[USECASES].failover_loadbalancer(
        ctx, path_id(request, ID), writing.metadata(request, ctx)
    )
    return empty(202)


async def _readable_lb(request: web.Request) -> dict[str, Any]:
    ctx = await request_context(request)
    lb_id = path_id(request, ID)
    row = await request.app[VIEWS].get(KIND, lb_id)
    if row is None:
        raise NotFound.resource(KIND.label, lb_id)
    enforce(ctx, Action.READ, row.project_id, hidden=NotFound.resource(KIND.label, lb_id))
    body: dict[str, Any] = json.loads(row.body)
    return body


async def status_tree(request: web.Request) -> web.StreamResponse:
    """``{"statuses": {"loadbalancer": {..., "listeners": [{..., "pools": [...]}]}}}``."""
    lb = await _readable_lb(request)
    tree = await request.app[VIEWS].tree(lb["id"])
    members_of: dict[str, list[dict[str, Any]]] = {}
    for pool_id, member in tree["members"]:
        members_of.setdefault(pool_id, []).append(member)
    monitor_of = {pool_id: hm for pool_id, hm in tree["healthmonitors"]}
    pools = [pool for _, pool in tree["pools"]]

    def pool_status(pool: dict[str, Any]) -> dict[str, Any]:
        out = _statuses(pool)
        hm = monitor_of.get(pool["id"])
        out["health_monitor"] = {**_statuses(hm), "type": hm["type"]} if hm is not None else None
        out["members"] = [
            {**_statuses(m), "address": m["address"], "protocol_port": m["protocol_port"]}
            for m in members_of.get(pool["id"], [])
        ]
        return out

    listeners = []
    for _, listener in tree["listeners"]:
        # The default pool first, then the pools its rule-bearing enabled policies redirect to.
        used = sorted(
            (p for p in pools if any(li["id"] == listener["id"] for li in p["listeners"])),
            key=lambda p: p["id"] != listener.get("default_pool_id"),
        )
        listeners.append({**_statuses(listener), "pools": [pool_status(p) for p in used]})
    return encoded({"statuses": {"loadbalancer": {**_statuses(lb), "listeners": listeners}}})


def _statuses(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": body["id"],
        "name": body["name"],
        "operating_status": body["operating_status"],
        "provisioning_status": body["provisioning_status"],
    }


async def stats(request: web.Request) -> web.StreamResponse:
    lb = await _readable_lb(request)
    return encoded({"stats": await request.app[VIEWS].stats(lb_id=lb["id"])})


def register(api: ApiRouter) -> None:
    tag = "loadbalancers"
    one = f"/loadbalancers/{{{ID}}}"
    api.lbaas(
        "GET",
        "/loadbalancers",
        reading.listing(KIND),
        summary="List load balancers",
        tag=tag,
        response_key="loadbalancers",
    )
    api.lbaas(
        "POST",
        "/loadbalancers",
        create,
        summary="Create a load balancer",
        tag=tag,
        status=201,
        request=LoadBalancerCreate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "GET",
        one,
        reading.show(KIND, ID),
        summary="Show a load balancer",
        tag=tag,
        response_key=KIND.singular,
    )
    api.lbaas(
        "PUT",
        one,
        update,
        summary="Update a load balancer",
        tag=tag,
        request=LoadBalancerUpdate,
        envelope=KIND.singular,
        response_key=KIND.singular,
    )
    api.lbaas(
        "DELETE", one, delete, summary="Delete a load balancer (?cascade=true)", tag=tag, status=204
    )
    api.lbaas(
        "GET", f"{one}/status", status_tree, summary="Status tree", tag=tag, response_key="statuses"
    )
    api.lbaas(
        "GET",
        f"{one}/statuses",
        status_tree,
        summary="Status tree (alias)",
        tag=tag,
        response_key="statuses",
    )
    api.lbaas(
        "GET",
        f"{one}/stats",
        stats,
        summary="Load balancer statistics",
        tag=tag,
        response_key="stats",
    )
    api.lbaas(
        "PUT", f"{one}/failover", failover, summary="Fail over a load balancer", tag=tag, status=202
    )
