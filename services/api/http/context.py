"""The auth seam: the one place where a request's project and roles are determined.

``STRATEGIES`` maps ``ApiSettings.auth_strategy`` to a resolver factory. Handlers call
``request_context(request)``; nothing else reads identity headers. The identity task adds its
strategies ``keystone`` (tokens of our Keystone subset, or the admin token) and ``admin_token``
resolve through ``app[IDENTITY]``; a resolver raises Unauthorized (401) to refuse a request.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Final, Protocol

from aiohttp import web

from libs.common.errors import ConfigurationError, Unauthorized
from services.api.auth.keystone import KeystoneApi
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


IDENTITY = web.AppKey("identity", KeystoneApi)
_UNAUTHORIZED: Final = "The request you have made requires authentication."


class TokenAuth:
    """``keystone``: a token issued by our Keystone subset (any replica with the signing key
    validates it), or the operator's static admin token when one is configured."""

    def __init__(self, settings: ApiSettings) -> None:
        pass

    async def __call__(self, request: web.Request) -> RequestContext:
        token = request.headers.get("X-Auth-Token", "")
        ctx = await request.app[IDENTITY].context_for_token(token) if token else None
        if ctx is None:
            raise Unauthorized(_UNAUTHORIZED)
        return ctx


class AdminTokenAuth:
    """``admin_token``: only the operator's static token (the CLI's ``--os-auth-type
    admin_token``); it acts as an admin of the admin project."""

    def __init__(self, settings: ApiSettings) -> None:
        if not settings.admin_token:
            raise ConfigurationError("auth_strategy admin_token needs FULCRUM_API_ADMIN_TOKEN")
        self._token = settings.admin_token.encode()

    async def __call__(self, request: web.Request) -> RequestContext:
        token = request.headers.get("X-Auth-Token", "").encode()
        if not token or not hmac.compare_digest(token, self._token):
            raise Unauthorized(_UNAUTHORIZED)
        return request.app[IDENTITY].admin_context


STRATEGIES: dict[str, Callable[[ApiSettings], ContextResolver]] = {
    "keystone": TokenAuth,
    "admin_token": AdminTokenAuth,
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
