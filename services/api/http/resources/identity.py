"""Routes of the Keystone v3 subset and the Neutron v2.0 read subset on the API's port.

Handlers are looked up on the app (``IDENTITY``, ``NEUTRON``), which ``create_app`` builds
from settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from services.api.auth import directory
from services.api.http.context import IDENTITY
from services.api.http.neutron import RESOURCES, NeutronApi, NeutronResource
from services.api.http.routing import ApiRouter

NEUTRON: Final = web.AppKey("neutron", NeutronApi)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _keystone(name: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        method: Handler = getattr(request.app[IDENTITY], name)
        return await method(request)

    return handle


def _directory(handler: directory.Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request.app[IDENTITY], request)
        return response

    return handle


def _neutron_list(resource: NeutronResource) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[NEUTRON].list_collection(resource, request)

    return handle


def _neutron_show(resource: NeutronResource) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[NEUTRON].show_member(resource, request)

    return handle


# Neutron's prefix, and /v2 too: Octavia's version document links there (clients with
# auth_type none follow that link to the network API).
NEUTRON_PREFIXES: Final = ("/v2.0", "/v2")


def register_neutron(api: ApiRouter, resource: NeutronResource) -> None:
    """``GET {prefix}/{path}`` and ``GET {prefix}/{path}/{id}`` of one Neutron collection."""
    for prefix in NEUTRON_PREFIXES:
        path = f"{prefix}/{resource.path}"
        list_handler, show_handler = _neutron_list(resource), _neutron_show(resource)
        api.exact("GET", path, list_handler, summary=f"List {resource.path}", tag="network")
        summary = f"Show one of {resource.path}"
        api.exact("GET", f"{path}/{{id}}", show_handler, summary=summary, tag="network")


def register(api: ApiRouter) -> None:
    keystone = [
        ("GET", "/v3", "version", "Identity API version"),
        ("GET", "/v3/", "version", "Identity API version"),
        ("POST", "/v3/auth/tokens", "issue_token", "Issue a token (password or token method)"),
        ("GET", "/v3/auth/tokens", "validate_token", "Validate X-Subject-Token"),
        ("HEAD", "/v3/auth/tokens", "validate_token", "Check X-Subject-Token"),
        ("DELETE", "/v3/auth/tokens", "revoke_token", "Revoke X-Subject-Token"),
    ]
    statuses = {"POST": 201, "DELETE": 204}
    for method, path, name, summary in keystone:
        status = statuses.get(method, 200)
        api.exact(method, path, _keystone(name), summary=summary, tag="identity", status=status)
    for path, handler, summary in directory.ROUTES:
        api.exact("GET", path, _directory(handler), summary=summary, tag="identity")
    for resource in RESOURCES:
        register_neutron(api, resource)
