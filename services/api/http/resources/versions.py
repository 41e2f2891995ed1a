"""``GET /``: the open version document (v2.0 ... v2.30, v2.30 CURRENT), and the version
roots, which answer the JSON string ``"v2"`` as Octavia's do.

Every version's self link ends in ``/v2``, as Octavia's: clients in ``auth_type none`` mode
follow it and look for the Neutron collections beside it, so those are served under ``/v2``
too (client-wire.md section 6).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from services.api.http.reading import base_url
from services.api.http.responses import encoded
from services.api.http.routing import ApiRouter

CURRENT: Final = 30
# Octavia's ``updated`` of each version, v2.0 first.
UPDATED: Final = (
    "2016-12-11T00:00:00Z",
    "2018-04-20T00:00:00Z",
    "2018-07-31T00:00:00Z",
    "2018-12-18T00:00:00Z",
    "2018-12-19T00:00:00Z",
    "2019-01-21T00:00:00Z",
    "2019-01-25T00:00:00Z",
    "2018-01-25T12:00:00Z",
    "2019-02-12T00:00:00Z",
    "2019-03-04T00:00:00Z",
    "2019-03-05T00:00:00Z",
    "2019-06-24T00:00:00Z",
    "2019-09-11T00:00:00Z",
    "2019-09-13T00:00:00Z",
    "2019-11-10T00:00:00Z",
    "2020-03-10T00:00:00Z",
    "2020-03-15T00:00:00Z",
    "2020-04-29T00:00:00Z",
    "2020-04-29T01:00:00Z",
    "2020-05-12T00:00:00Z",
    "2020-08-02T00:00:00Z",
    "2020-09-03T00:00:00Z",
    "2020-09-04T00:00:00Z",
    "2020-09-07T00:00:00Z",
    "2020-10-15T00:00:00Z",
    "2021-10-02T00:00:00Z",
    "2022-08-29T00:00:00Z",
    "2023-05-05T00:00:00Z",
    "2023-11-08T00:00:00Z",
    "2024-10-15T00:00:00Z",
    "2025-02-26T00:00:00Z",
)
VERSION_ROOTS: Final = (
    "/v2",
    "/v2/",
    "/v2.0",
    "/v2.0/",
    "/v2/lbaas",
    "/v2.0/lbaas",
    "/v2/octavia",
    "/v2.0/octavia",
)


def versions(base: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"v2.{minor}",
            "status": "CURRENT" if minor == CURRENT else "SUPPORTED",
            "updated": UPDATED[minor],
            "links": [{"href": f"{base}/v2", "rel": "self"}],
        }
        for minor in range(CURRENT + 1)
    ]


async def root(request: web.Request) -> web.StreamResponse:
    return encoded({"versions": versions(base_url(request))})


async def version(request: web.Request) -> web.StreamResponse:
    """A version root: the JSON string ``"v2"``."""
    return encoded("v2")


def register(api: ApiRouter) -> None:
    api.exact("GET", "/", root, summary="API versions", tag="versions")
    for path in VERSION_ROOTS:
        api.exact("GET", path, version, summary="The API version root", tag="versions")
