"""The auth middleware: turns each request's credentials into its RequestContext.

Strategies: ``keystone`` (signed tokens from our Keystone subset; the static admin token too,
when configured), ``admin_token`` (only the static operator token), ``noauth`` (development:
any token, project from ``X-Project-Id`` or the default, admin, quotas not enforced). Open
paths (version documents, token issuing, health and docs) need no credentials.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from services.api.auth.context import RequestContext
from services.api.auth.keystone import KeystoneApi, unauthorized

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STRATEGIES: Final = ("keystone", "admin_token", "noauth")
_OPEN_EXACT: Final = frozenset({"/", "/v3", "/v3/", "/healthz", "/metrics", "/v2", "/v2.0"})
_OPEN_PREFIXES: Final = ("/openapi", "/docs")


def _is_open(request: web.Request) -> bool:
    path = request.path.rstrip("/") or "/"
    if path in _OPEN_EXACT or request.path in _OPEN_EXACT:
        return True
    if path == "/v3/auth/tokens" and request.method == "POST":
        return True
    return request.path.startswith(_OPEN_PREFIXES)


def auth_middleware(
    strategy: str,
    *,
    keystone: KeystoneApi | None,
    admin_token: str | None,
    admin_project_id: str,
    default_project_id: str,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Build the middleware; raises ValueError for an unusable configuration."""
    if strategy not in STRATEGIES:
        raise ValueError(f"auth_strategy must be one of {STRATEGIES}, not {strategy!r}")
    if strategy == "admin_token" and not admin_token:
        raise ValueError("auth_strategy admin_token needs an admin_token")
    if strategy == "keystone" and keystone is None:
        raise ValueError("auth_strategy keystone needs the identity configuration")
    if strategy == "noauth":
        log.warning("AUTHENTICATION IS DISABLED (auth_strategy=noauth): development use only")
    admin_context = RequestContext(
        project_id=admin_project_id, roles=frozenset({"admin", "member", "reader"}), is_admin=True
    )

    def from_token(token: str) -> RequestContext | None:
        if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
            return admin_context
        if strategy == "keystone" and keystone is not None:
            return keystone.context_for_token(token)
        return None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        token = request.headers.get("X-Auth-Token", "")
        if strategy == "noauth":
            project = request.headers.get("X-Project-Id") or default_project_id
            request["context"] = RequestContext(
                project_id=project,
                roles=frozenset({"admin", "member", "reader"}),
                is_admin=True,
                enforce_quotas=False,
            )
            return await handler(request)
        context = from_token(token) if token else None
        if context is None:
            if _is_open(request):
                return await handler(request)
            return unauthorized()
        request["context"] = context
        return await handler(request)

    return middleware
