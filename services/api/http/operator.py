"""The operator listener: ``/healthz``, ``/readyz`` and ``/metrics`` apart from tenants.

With ``operator_port`` set, the API listens on two ports and this middleware splits them by
the port a request arrived on: the operator endpoints answer only there, and everything else
only on the tenant-facing port (404 in the path's error shape elsewhere). With
``operator_port`` 0 one port serves both (development, tests).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

OPERATOR_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})


def _arrival_port(request: web.Request) -> int | None:
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return int(sockname[1])
    return None


def operator_split(operator_port: int) -> Middleware:
    """The middleware keeping operator endpoints on ``operator_port`` only (and tenants'
    routes off it)."""

    @web.middleware
    async def split(request: web.Request, handler: Handler) -> web.StreamResponse:
        on_operator_port = _arrival_port(request) == operator_port
        if (request.path in OPERATOR_PATHS) != on_operator_port:
            raise web.HTTPNotFound()
        return await handler(request)

    return split
