"""``GET /``: the open version document (v2.0 ... v2.30, v2.30 CURRENT).

Every version's self link ends in ``/v2.0``: clients in ``auth_type none`` mode follow it and
then look for ``/v2.0/subnets`` beside ``/v2.0/lbaas`` (client-wire.md section 6).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from services.api.http.reading import base_url
from services.api.http.responses import encoded
from services.api.http.routing import ApiRouter

CURRENT: Final = 30
_UPDATED: Final = "2024-10-01T00:00:00Z"


def versions(base: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"v2.{minor}",
            "status": "CURRENT" if minor == CURRENT else "SUPPORTED",
            "updated": _UPDATED,
            "links": [{"href": f"{base}/v2.0", "rel": "self"}],
        }
        for minor in range(CURRENT + 1)
    ]


async def root(request: web.Request) -> web.StreamResponse:
    return encoded({"versions": versions(base_url(request))})


async def version(request: web.Request) -> web.StreamResponse:
    """``GET /v2`` and ``GET /v2.0``: the current version alone."""
    return encoded({"version": versions(base_url(request))[-1]})


def register(api: ApiRouter) -> None:
    api.exact("GET", "/", root, summary="API versions", tag="versions")
    for path in ("/v2", "/v2.0", "/v2/", "/v2.0/"):
        api.exact("GET", path, version, summary="The current API version", tag="versions")
