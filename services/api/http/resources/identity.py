"""Routes of the Keystone v3 subset and the Neutron v2.0 read subset on the API's port.

Handlers are looked up on the app (``IDENTITY``, ``NEUTRON``), which ``create_app`` builds
from settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from services.api.http.context import IDENTITY
from services.api.http.neutron import NeutronApi
from services.api.http.routing import ApiRouter

NEUTRON: Final = web.AppKey("neutron", NeutronApi)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _keystone(name: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        method: Handler = getattr(request.app[IDENTITY], name)
        return await method(request)

    return handle


def _neutron(name: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        method: Handler = getattr(request.app[NEUTRON], name)
        return await method(request)

    return handle


def register(api: ApiRouter) -> None:
    keystone = [
        ("GET", "/v3", "version", "Identity API version"),
        ("GET", "/v3/", "version", "Identity API version"),
        ("POST", "/v3/auth/tokens", "issue_token", "Issue a token (password or token method)"),
        ("GET", "/v3/auth/tokens", "validate_token", "Validate X-Subject-Token"),
        ("HEAD", "/v3/auth/tokens", "validate_token", "Check X-Subject-Token"),
        ("GET", "/v3/projects", "list_projects", "Projects visible to the caller"),
        ("GET", "/v3/projects/{project}", "show_project", "One project"),
    ]
    for method, path, name, summary in keystone:
        status = 201 if method == "POST" else 200
        api.exact(method, path, _keystone(name), summary=summary, tag="identity", status=status)
    # Under /v2 too: the version document links there (clients in auth_type none follow it).
    for prefix in ("/v2.0", "/v2"):
        for kind in ("networks", "subnets", "ports"):
            api.exact(
                "GET",
                f"{prefix}/{kind}",
                _neutron(f"list_{kind}"),
                summary=f"List {kind}",
                tag="network",
            )
            api.exact(
                "GET",
                f"{prefix}/{kind}/{{id}}",
                _neutron(f"show_{kind[:-1]}"),
                summary=f"Show one of {kind}",
                tag="network",
            )
