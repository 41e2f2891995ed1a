"""Route registration: every Octavia path under each prefix, and the specs the OpenAPI document
will be built from (``ApiRouter.specs``: the hook for the OpenAPI task).

Octavia serves each ``lbaas`` resource under ``/v2`` and ``/v2.0``, with and without the
``lbaas`` segment, and accepts a ``.json`` suffix. A resource module is a ``register(api)``
function; ``app.ROUTE_MODULES`` lists them (adding a resource is one line there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel

VERSION_PREFIXES: Final = ("/v2", "/v2.0")
JSON_SUFFIX: Final = ".json"
# The media type of the live event feed (resources/events.py).
EVENT_STREAM: Final = "text/event-stream"


@dataclass(frozen=True)
class RouteSpec:
    """One operation as documented: canonical path (under ``/v2``), codes and schemas."""

    method: str
    path: str
    summary: str
    status: int
    tag: str
    request: type[BaseModel] | None = None
    envelope: str | None = None
    response_key: str | None = None


class ApiRouter:
    """Adds each operation under every alias Octavia serves and records its spec."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        self._router = router
        self.specs: list[RouteSpec] = []

    def lbaas(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        summary: str,
        tag: str,
        status: int = 200,
        request: type[BaseModel] | None = None,
        envelope: str | None = None,
        response_key: str | None = None,
    ) -> None:
        """``path`` is relative to ``lbaas`` (``/loadbalancers/{loadbalancer_id}``)."""
        spec = RouteSpec(
            method, f"/v2/lbaas{path}", summary, status, tag, request, envelope, response_key
        )
        self.specs.append(spec)
        for version in VERSION_PREFIXES:
            for prefix in (f"{version}/lbaas", version):
                self._add(method, prefix + path, handler)

    def octavia(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        summary: str,
        tag: str,
        status: int = 200,
        response_key: str | None = None,
    ) -> None:
        """``/v2/octavia/...`` and ``/v2.0/octavia/...`` (amphorae)."""
        self.specs.append(
            RouteSpec(method, f"/v2/octavia{path}", summary, status, tag, response_key=response_key)
        )
        for version in VERSION_PREFIXES:
            self._add(method, f"{version}/octavia{path}", handler)

    def exact(
        self, method: str, path: str, handler: Handler, *, summary: str, tag: str, status: int = 200
    ) -> None:
        """One path as given (the version document, the Neutron and Keystone subsets)."""
        self.specs.append(RouteSpec(method, path, summary, status, tag))
        self._add(method, path, handler)

    def _add(self, method: str, path: str, handler: Handler) -> None:
        self._router.add_route(method, path, handler)
        if not path.endswith(("}", "/")):
            self._router.add_route(method, path + JSON_SUFFIX, handler)


def path_id(request: web.Request, name: str) -> str:
    """A path parameter without the optional ``.json`` suffix."""
    value = request.match_info[name]
    return value[: -len(JSON_SUFFIX)] if value.endswith(JSON_SUFFIX) else value


Registrar = Callable[[ApiRouter], None]
