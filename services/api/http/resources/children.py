"""The child resources of a load balancer: one table of routes, one generic registration.

Every child kind gets list, create, show, update and delete from its row in ``ROUTES``; the
endpoints only one kind has (listener statistics, member statistics, the members batch
replace) are registered beside it. Member statistics are Fulcrum's own: Octavia has none.
Adding a kind is one row (plus its schemas and its use case).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

from libs.common.errors import NotFound
from libs.common.events import Metadata
from services.api.domain.kinds import HEALTHMONITOR, L7POLICY, L7RULE, LISTENER, MEMBER, POOL, Kind
from services.api.domain.policy import Action, RequestContext, enforce
from services.api.domain.ports import Located
from services.api.domain.usecases import Created, LoadBalancing
from services.api.http import reading, writing
from services.api.http.bodies import read_document, read_input
from services.api.http.context import request_context
from services.api.http.deps import USECASES, VIEWS
from services.api.http.errors import FrameworkError
from services.api.http.query import parse_bool
from services.api.http.responses import empty, encoded
from services.api.http.routing import ApiRouter, path_id
from services.api.http.schemas import Input
from services.api.http.schemas.healthmonitor import HealthMonitorCreate, HealthMonitorUpdate
from services.api.http.schemas.l7 import L7PolicyCreate, L7PolicyUpdate, L7RuleCreate, L7RuleUpdate
from services.api.http.schemas.listener import ListenerCreate, ListenerUpdate
from services.api.http.schemas.member import MemberCreate, MembersBatch, MemberUpdate
from services.api.http.schemas.pool import PoolCreate, PoolUpdate

# (use cases, caller, the parent in the path or None, create body, metadata) -> created.
CreateCall = Callable[
    [LoadBalancing, RequestContext, Located | None, dict[str, Any], Metadata], Awaitable[Created]
]

# The parent of a nested collection, as ``parent_first`` found it (one lookup per request).
PARENT: Final = web.RequestKey[Located]("parent")


@dataclass(frozen=True)
class Summaries:
    """The OpenAPI summaries of the five generic operations."""

    list: str
    create: str
    show: str
    update: str
    delete: str


@dataclass(frozen=True)
class ChildRoutes:
    """The routes of one child kind, relative to ``/lbaas``."""

    kind: Kind
    # The collection: "/listeners", or "/pools/{pool_id}/members" under a parent.
    collection: str
    id_param: str
    create_schema: type[Input]
    update_schema: type[Input]
    create: CreateCall
    summaries: Summaries
    # For a collection nested under its parent: the parent kind and its path parameter.
    parent: Kind | None = None
    parent_param: str | None = None
    # Endpoints of this kind only, registered right after the generic ones.
    extra: Callable[[ApiRouter], None] | None = None

    @property
    def one(self) -> str:
        return f"{self.collection}/{{{self.id_param}}}"


# --- endpoints of one kind only ---------------------------------------------------------------


async def listener_stats(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    listener_id = path_id(request, "listener_id")
    row = await request.app[VIEWS].get(LISTENER, listener_id)
    hidden = NotFound.resource(LISTENER.label, listener_id)
    if row is None:
        raise hidden
    enforce(ctx, Action.READ, row.project_id, hidden=hidden)
    return encoded({"stats": await request.app[VIEWS].stats(listener_id=listener_id)})


async def member_stats(request: web.Request) -> web.StreamResponse:
    """A member's traffic through its pool, summed over the amphorae, in the listener stats'
    shape; 404 as for showing the member."""
    ctx = await request_context(request)
    member_id = path_id(request, "member_id")
    row = await request.app[VIEWS].get(MEMBER, member_id)
    hidden = NotFound.resource(MEMBER.label, member_id)
    if row is None or row.parent_id != path_id(request, "pool_id"):
        raise hidden
    enforce(ctx, Action.READ, row.project_id, hidden=hidden)
    return encoded({"stats": await request.app[VIEWS].stats(member_id=member_id)})


async def replace_members(request: web.Request) -> web.StreamResponse:
    """Batch update: members matched by (address, protocol_port); 202 without a body."""
    ctx = await request_context(request)
    batch = await read_document(request, MembersBatch, "members")
    raw = request.query.get("additive_only")
    additive = parse_bool(raw, "additive_only") if raw is not None else False
    await request.app[USECASES].replace_members(
        ctx,
        request[PARENT],
        [m.model_dump(mode="json", exclude_unset=True) for m in batch.members],
        additive,
        writing.metadata(request, ctx),
    )
    return empty(202)


def _listener_extras(api: ApiRouter) -> None:
    api.lbaas(
        "GET",
        "/listeners/{listener_id}/stats",
        listener_stats,
        summary="Listener statistics",
        tag="listeners",
        response_key="stats",
    )


def _member_extras(api: ApiRouter) -> None:
    api.lbaas(
        "PUT",
        "/pools/{pool_id}/members",
        parent_first(POOL, "pool_id", replace_members),
        summary="Batch update members (?additive_only=true)",
        tag="members",
        status=202,
        request=MembersBatch,
    )
    api.lbaas(
        "GET",
        "/pools/{pool_id}/members/{member_id}/stats",
        parent_first(POOL, "pool_id", member_stats),
        summary="Member statistics (a Fulcrum extension: Octavia has none)",
        tag="members",
        response_key="stats",
    )


def _parent(parent: Located | None) -> Located:
    assert parent is not None, "a nested collection always has its parent in the path"
    return parent


ROUTES: Final = (
    ChildRoutes(
        kind=LISTENER,
        collection="/listeners",
        id_param="listener_id",
        create_schema=ListenerCreate,
        update_schema=ListenerUpdate,
        create=lambda uc, ctx, _, fields, meta: uc.create_listener(ctx, fields, meta),
        summaries=Summaries(
            "List listeners",
            "Create a listener",
            "Show a listener",
            "Update a listener",
            "Delete a listener",
        ),
        extra=_listener_extras,
    ),
    ChildRoutes(
        kind=POOL,
        collection="/pools",
        id_param="pool_id",
        create_schema=PoolCreate,
        update_schema=PoolUpdate,
        create=lambda uc, ctx, _, fields, meta: uc.create_pool(ctx, fields, meta),
        summaries=Summaries(
            "List pools", "Create a pool", "Show a pool", "Update a pool", "Delete a pool"
        ),
    ),
    ChildRoutes(
        kind=MEMBER,
        collection="/pools/{pool_id}/members",
        id_param="member_id",
        create_schema=MemberCreate,
        update_schema=MemberUpdate,
        create=lambda uc, ctx, pool, fields, meta: uc.create_member(
            ctx, _parent(pool), fields, meta
        ),
        summaries=Summaries(
            "List a pool's members",
            "Add a member",
            "Show a member",
            "Update a member",
            "Remove a member",
        ),
        parent=POOL,
        parent_param="pool_id",
        extra=_member_extras,
    ),
    ChildRoutes(
        kind=HEALTHMONITOR,
        collection="/healthmonitors",
        id_param="healthmonitor_id",
        create_schema=HealthMonitorCreate,
        update_schema=HealthMonitorUpdate,
        create=lambda uc, ctx, _, fields, meta: uc.create_healthmonitor(ctx, fields, meta),
        summaries=Summaries(
            "List health monitors",
            "Create a health monitor",
            "Show a health monitor",
            "Update a health monitor",
            "Delete a health monitor",
        ),
    ),
    ChildRoutes(
        kind=L7POLICY,
        collection="/l7policies",
        id_param="l7policy_id",
        create_schema=L7PolicyCreate,
        update_schema=L7PolicyUpdate,
        create=lambda uc, ctx, _, fields, meta: uc.create_l7policy(ctx, fields, meta),
        summaries=Summaries(
            "List L7 policies",
            "Create an L7 policy",
            "Show an L7 policy",
            "Update an L7 policy",
            "Delete an L7 policy",
        ),
    ),
    ChildRoutes(
        kind=L7RULE,
        collection="/l7policies/{l7policy_id}/rules",
        id_param="l7rule_id",
        create_schema=L7RuleCreate,
        update_schema=L7RuleUpdate,
        create=lambda uc, ctx, policy, fields, meta: uc.create_l7rule(
            ctx, _parent(policy), fields, meta
        ),
        summaries=Summaries(
            "List a policy's rules",
            "Create an L7 rule",
            "Show an L7 rule",
            "Update an L7 rule",
            "Delete an L7 rule",
        ),
        parent=L7POLICY,
        parent_param="l7policy_id",
    ),
)


def creator(routes: ChildRoutes) -> Handler:
    """POST on a collection: 201 with the new resource's body."""
    kind = routes.kind

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        body = await read_input(request, routes.create_schema, kind.singular)
        created = await routes.create(
            request.app[USECASES],
            ctx,
            request[PARENT] if routes.parent_param else None,
            body.model_dump(mode="json", exclude_unset=True),
            writing.metadata(request, ctx),
        )
        return writing.answer(created.outcome, kind, created.resource_id, 201)

    return handler


# How pecan names a missing parent of a nested collection.
_PARENT_LABELS: Final = {"pools": "Pool", "l7policies": "L7Policy"}


def parent_first(
    parent: Kind, parent_param: str, handler: Handler, *, creating: bool = False
) -> Handler:
    """Octavia looks the parent up while routing, before anything else: a missing one is
    pecan's 404 titled "Bad Request". The parent found is ``request[PARENT]`` for ``handler``
    (a create or batch replace decides on it without a second lookup; ``creating``: found
    with ``LoadBalancing.find``, so that the create decides on the load that found it)."""

    async def checked(request: web.Request) -> web.StreamResponse:
        await request_context(request)
        parent_id = path_id(request, parent_param)
        row: Located | None
        if creating:
            try:
                row = await request.app[USECASES].find(parent, parent_id)
            except NotFound:
                row = None
        else:
            row = await request.app[VIEWS].get(parent, parent_id)
        if row is None:
            label = _PARENT_LABELS[parent.key]
            raise FrameworkError(404, "Bad Request", f"{label} {parent_id} not found.")
        request[PARENT] = row
        return await handler(request)

    return checked


def register_child(api: ApiRouter, routes: ChildRoutes) -> None:
    """The five generic operations of one child kind."""
    kind, tag, say = routes.kind, routes.kind.key, routes.summaries
    ids = (routes.id_param, routes.parent_param)
    parent, parent_param = routes.parent, routes.parent_param

    def nested(handler: Handler, *, creating: bool = False) -> Handler:
        if parent is None or parent_param is None:
            return handler
        return parent_first(parent, parent_param, handler, creating=creating)

    api.lbaas(
        "GET",
        routes.collection,
        nested(reading.listing(kind, routes.parent, routes.parent_param)),
        summary=say.list,
        tag=tag,
        response_key=kind.plural,
    )
    api.lbaas(
        "POST",
        routes.collection,
        nested(creator(routes), creating=True),
        summary=say.create,
        tag=tag,
        status=201,
        request=routes.create_schema,
        envelope=kind.singular,
        response_key=kind.singular,
    )
    api.lbaas(
        "GET",
        routes.one,
        nested(reading.show(kind, *ids)),
        summary=say.show,
        tag=tag,
        response_key=kind.singular,
    )
    api.lbaas(
        "PUT",
        routes.one,
        nested(writing.updater(kind, routes.update_schema, *ids)),
        summary=say.update,
        tag=tag,
        request=routes.update_schema,
        envelope=kind.singular,
        response_key=kind.singular,
    )
    api.lbaas(
        "DELETE",
        routes.one,
        nested(writing.deleter(kind, *ids)),
        summary=say.delete,
        tag=tag,
        status=204,
    )


def register(api: ApiRouter) -> None:
    for routes in ROUTES:
        register_child(api, routes)
        if routes.extra is not None:
            routes.extra(api)
