"""The auth seam: the one place where a request's project and roles are determined.

``STRATEGIES`` maps ``ApiSettings.auth_strategy`` to a resolver factory. Handlers call
``request_context(request)``; nothing else reads identity headers. The identity task adds its
Keystone strategy with one line here: ``STRATEGIES["keystone"] = KeystoneResolver`` (from
``services/api/auth/``); a resolver raises a DomainError (e.g. 401) to refuse a request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

from aiohttp import web

from services.api.domain.policy import RequestContext
from services.api.settings import ApiSettings

PROJECT_HEADER: Final = "X-Project-Id"
ROLES_HEADER: Final = "X-Roles"
USER_HEADER: Final = "X-User-Id"


class ContextResolver(Protocol):
    """Derives the caller's identity from a request (may raise a DomainError)."""

    async def __call__(self, request: web.Request) -> RequestContext: ...


class NoAuth:
    """Octavia's ``noauth``: every caller is an admin; the project is ``X-Project-Id`` or the
    configured default. Any ``X-Auth-Token`` (even ``notused``) is ignored."""

    def __init__(self, settings: ApiSettings) -> None:
        self._default_project = settings.default_project_id

    async def __call__(self, request: web.Request) -> RequestContext:
        project = request.headers.get(PROJECT_HEADER) or self._default_project
        return RequestContext(
            project_id=project,
            roles=frozenset({"admin"}),
            is_admin=True,
            user_id=request.headers.get(USER_HEADER),
        )


class HeaderRoles:
    """Octavia's ``testing`` strategy: identity from ``X-Project-Id``/``X-Roles`` headers with
    the RBAC rules enforced (no ``X-Roles`` means the ``member`` role)."""

    def __init__(self, settings: ApiSettings) -> None:
        self._default_project = settings.default_project_id

    async def __call__(self, request: web.Request) -> RequestContext:
        raw_roles = request.headers.get(ROLES_HEADER)
        roles = (
            frozenset(r.strip().lower() for r in raw_roles.split(",") if r.strip())
            if raw_roles is not None
            else frozenset({"member"})
        )
        return RequestContext(
            project_id=request.headers.get(PROJECT_HEADER) or self._default_project,
            roles=roles,
            is_admin="admin" in roles,
            user_id=request.headers.get(USER_HEADER),
        )


STRATEGIES: dict[str, Callable[[ApiSettings], ContextResolver]] = {
    "noauth": NoAuth,
    "testing": HeaderRoles,
}
RESOLVER = web.AppKey("context_resolver", ContextResolver)
_CONTEXT: Final = web.RequestKey("request_context", RequestContext)


def build_resolver(settings: ApiSettings) -> ContextResolver:
    """The resolver of ``settings.auth_strategy``; raises ValueError for an unknown one."""
    try:
        factory = STRATEGIES[settings.auth_strategy]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(
            f"unknown auth_strategy {settings.auth_strategy!r} (known: {known})"
        ) from None
    return factory(settings)


async def request_context(request: web.Request) -> RequestContext:
    """The caller of ``request`` (resolved once per request)."""
    ctx: RequestContext | None = request.get(_CONTEXT)
    if ctx is None:
        ctx = await request.app[RESOLVER](request)
        request[_CONTEXT] = ctx
    return ctx
