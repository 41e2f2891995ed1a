"""``/lbaas/providers``: the enabled provider drivers, and what their flavor and availability
zone profiles may hold (the capabilities, admin only)."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from services.api.domain import providers
from services.api.domain.policy import Action, enforce
from services.api.http.context import request_context
from services.api.http.query import fields_of
from services.api.http.responses import encoded
from services.api.http.routing import ApiRouter, path_id


def _described(
    request: web.Request, named: Mapping[str, str], filtered: bool
) -> list[dict[str, str]]:
    """``[{"name", "description"}]``, with Octavia's ``name``/``description`` filters (exact
    match, capabilities only) and field selection."""
    items = [{"name": k, "description": v} for k, v in named.items()]
    if filtered:
        for attr in ("name", "description"):
            wanted = request.query.get(attr)
            if wanted:
                items = [i for i in items if i[attr] == wanted]
    fields = fields_of(request.query)
    if fields:
        items = [{k: v for k, v in i.items() if k in fields} for i in items]
    return items


async def list_providers(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    enforce(ctx, Action.READ, ctx.project_id)
    return encoded({"providers": _described(request, providers.PROVIDERS, filtered=False)})


def _capabilities(key: str, capabilities: Mapping[str, str]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        enforce(ctx, Action.ADMIN, ctx.project_id)
        providers.require_enabled(path_id(request, "provider"))
        return encoded({key: _described(request, capabilities, filtered=True)})

    return handler


def register(api: ApiRouter) -> None:
    tag = "providers"
    api.lbaas(
        "GET",
        "/providers",
        list_providers,
        summary="List provider drivers",
        tag=tag,
        response_key="providers",
    )
    api.lbaas(
        "GET",
        "/providers/{provider}/flavor_capabilities",
        _capabilities("flavor_capabilities", providers.FLAVOR_CAPABILITIES),
        summary="Flavor profile settings a provider supports",
        tag=tag,
        response_key="flavor_capabilities",
    )
    api.lbaas(
        "GET",
        "/providers/{provider}/availability_zone_capabilities",
        _capabilities("availability_zone_capabilities", providers.AVAILABILITY_ZONE_CAPABILITIES),
        summary="Availability zone profile settings a provider supports",
        tag=tag,
        response_key="availability_zone_capabilities",
    )
