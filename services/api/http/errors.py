"""The one HTTP mapping: request ids, content negotiation, and every error in Octavia's shape.

``{"faultcode": "Client"|"Server", "faultstring": ..., "debuginfo": null}`` (WSME's fault) for
DomainErrors, validation errors and crashes (logged, shown as a generic 500); pecan's
``{"code", "title", "description"}`` for what the framework answers itself (unrouted paths,
unsupported methods with ``Allow``, FrameworkErrors); a 406 for an unacceptable ``Accept``
uses the API-WG shape, as Octavia's webob layer does. While Postgres
cannot be reached, requests that need it answer 503 with ``Retry-After`` (never 500); the pool
reconnects by itself once the database is back. Every response carries
``x-openstack-request-id``; state-changing requests run in a tracing span.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from pydantic import ValidationError

from libs.common.database import database_unavailable
from libs.common.errors import DomainError, FulcrumError, Unauthorized
from libs.common.events.visibility import FEED_PATH
from libs.common.logsetup import set_log_context
from libs.common.service import METRICS
from libs.common.telemetry import context_from_traceparent, tracer
from services.api.dashboard import PREFIX as DASHBOARD_PREFIX
from services.api.http.routing import EVENT_STREAM
from services.api.http.schemas import describe

log = logging.getLogger(__name__)

REQUEST_ID_HEADER: Final = "x-openstack-request-id"
REQUEST_ID: Final = web.RequestKey("request_id", str)
INTERNAL_ERROR: Final = "An unexpected error occurred; the request id identifies it in the logs."
DATABASE_UNAVAILABLE: Final = (
    "The service is temporarily unavailable: the database cannot be reached. Retry later."
)
RETRY_AFTER_SECONDS: Final = 2
_ACCEPTABLE: Final = frozenset({"", "*/*", "application/*", "application/json"})
# The live event feed also answers ``Accept: text/event-stream`` (what EventSource sends).
_ACCEPTABLE_FEED: Final = _ACCEPTABLE | {"text/*", EVENT_STREAM}
_HTTP_MESSAGES: Final = {
    404: "The resource could not be found.",
    405: "The method is not allowed for this resource.",
    413: "The request body is too large.",
}
_TITLES: Final = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
# The key manager's paths: Barbican's error body, and payload reads negotiate their own type.
KEY_MANAGER_PREFIX: Final = "/v1"
# The identity paths: Keystone's error body.
IDENTITY_PREFIX: Final = "/v3"
_tracer = tracer("fulcrum.api")
# Postgres text cannot hold NUL, so a NUL anywhere in a request is refused before it gets there.
NUL_REFUSED: Final = "Invalid input: NUL characters are not allowed."
_JSON_NUL: Final = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


class FrameworkError(FulcrumError):
    """An error pecan answers itself, in its body ``{"code", "title", "description"}``
    (bad paging arguments, a body that is not UTF-8, a missing parent collection)."""

    def __init__(self, status: int, title: str, description: str | None) -> None:
        super().__init__(description or title)
        self.status = status
        self.title = title
        self.description = description


def pecan_error(status: int, title: str, description: str | None) -> web.Response:
    body = {"code": status, "title": title, "description": description}
    response = web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )
    # The reason phrase follows the title ("404 Bad Request" for a missing parent).
    response.set_status(status, title)
    return response


async def _controller_methods(request: web.Request) -> set[str]:
    """What pecan's Allow names: every method of the resource's controller, i.e. of the
    collection and of its items (``/loadbalancers`` and ``/loadbalancers/{id}``)."""
    path = request.path.rstrip("/")
    methods: set[str] = set()
    for candidate in (path, path.rsplit("/", 1)[0], f"{path}/0"):
        probe = request.clone(method="PATCH", rel_url=candidate)
        match = await request.app.router.resolve(probe)
        failure = getattr(match, "http_exception", None)
        if isinstance(failure, web.HTTPMethodNotAllowed):
            methods |= set(failure.allowed_methods)
    return methods


async def _routing_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """Unrouted paths and unsupported methods: pecan's body on the load-balancing API."""
    if _under(request.path, KEY_MANAGER_PREFIX) or exc.status not in (404, 405):
        return _fault_for(request, exc.status, _HTTP_MESSAGES.get(exc.status, exc.reason))
    response = pecan_error(exc.status, _TITLES[exc.status], "")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = set(exc.allowed_methods)
        if not _under(request.path, IDENTITY_PREFIX):
            allowed |= await _controller_methods(request)
        response.headers["Allow"] = ", ".join(sorted(allowed))
    return response


def fault(status: int, message: str) -> web.Response:
    body = {
        "faultcode": "Client" if status < 500 else "Server",
        "faultstring": message,
        "debuginfo": None,
    }
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def barbican_error(status: int, message: str) -> web.Response:
    """Barbican's error body, for the key manager's ``/v1`` paths (its clients read
    ``title`` and ``description``)."""
    body = {"code": status, "title": _TITLES.get(status, "Error"), "description": message}
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _fault_for(request: web.Request, status: int, message: str) -> web.Response:
    if _under(request.path, KEY_MANAGER_PREFIX):
        return barbican_error(status, message)
    return fault(status, message)


def keystone_error(status: int, title: str, message: str) -> web.Response:
    """Keystone's error body, for identity endpoints and every 401."""
    body = {"error": {"code": status, "title": title, "message": message}}
    response = web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Keystone uri="/v3"'
    return response


def _unavailable(request: web.Request) -> web.Response:
    """503 in the error shape of the path's API, telling the client when to retry."""
    if _under(request.path, IDENTITY_PREFIX):
        response = keystone_error(503, _TITLES[503], DATABASE_UNAVAILABLE)
    else:
        response = _fault_for(request, 503, DATABASE_UNAVAILABLE)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _not_acceptable(request_id: str, accept: str, offered: str) -> web.Response:
    body = {
        "errors": [
            {
                "status": 406,
                "title": "Not Acceptable",
                "detail": f"Only {offered} is available, not {accept}.",
                "request_id": request_id,
            }
        ]
    }
    return web.Response(status=406, body=json.dumps(body).encode(), content_type="application/json")


def acceptable(accept: str, *, event_stream: bool = False) -> bool:
    """Whether an ``Accept`` header admits application/json (or, with ``event_stream``,
    text/event-stream)."""
    admitted = _ACCEPTABLE_FEED if event_stream else _ACCEPTABLE
    return any(part.split(";", 1)[0].strip().lower() in admitted for part in accept.split(","))


async def _carries_nul(request: web.Request) -> bool:
    """A NUL in the path, the query or (escaped) in a JSON string of the body."""
    if "\x00" in request.path or "\x00" in request.query_string:
        return True
    if not request.can_read_body or request.content_type == "application/octet-stream":
        return False
    return bool(_JSON_NUL.search(await request.read()))


def _span_name(request: web.Request) -> str:
    """``<METHOD> <route template>``, e.g. ``GET /v2/lbaas/loadbalancers/{loadbalancer_id}``:
    no ids in span names (``<METHOD> unmatched`` for paths no route serves)."""
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else 'unmatched'}"


async def _answer(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        if await _carries_nul(request):
            return _fault_for(request, 400, NUL_REFUSED)
        with _tracer.start_as_current_span(
            _span_name(request),
            context=context_from_traceparent(request.headers.get("traceparent")),
            kind=trace.SpanKind.SERVER,
        ) as span:
            span.set_attribute("fulcrum.request_id", request_id)
            return await handler(request)
    except Unauthorized as exc:
        return keystone_error(401, "Unauthorized", exc.message)
    except DomainError as exc:
        if exc.http_status >= 500:
            log.warning("%s %s [%s]: %s", request.method, request.path, request_id, exc.detail)
        return _fault_for(request, exc.http_status, exc.message)
    except ValidationError as exc:
        return _fault_for(request, 400, describe(exc, exc.title))
    except FrameworkError as exc:
        return pecan_error(exc.status, exc.title, exc.description)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return await _routing_error(request, exc)
    except Exception as exc:
        if database_unavailable(exc):
            log.warning(
                "%s %s [%s]: database unavailable: %r",
                request.method,
                request.path,
                request_id,
                exc,
            )
            return _unavailable(request)
        log.exception("%s %s [%s] failed", request.method, request.path, request_id)
        return _fault_for(request, 500, INTERNAL_ERROR)


@web.middleware
async def octavia_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = f"req-{uuid.uuid4()}"
    request[REQUEST_ID] = request_id
    set_log_context(request_id=request_id)  # the access log line is written in this task too
    accept = request.headers.get("Accept")
    # Barbican's API and the dashboard's files answer their own content types.
    own_types = request.path.startswith((KEY_MANAGER_PREFIX + "/", DASHBOARD_PREFIX))
    feed = _under(request.path, FEED_PATH)
    if accept is not None and not own_types and not acceptable(accept, event_stream=feed):
        offered = f"application/json or {EVENT_STREAM}" if feed else "application/json"
        response: web.StreamResponse = _not_acceptable(request_id, accept, offered)
    else:
        response = await _answer(request, handler, request_id)
    response.headers[REQUEST_ID_HEADER] = request_id
    request.app[METRICS].inc(f"responses_{response.status // 100}xx_total")
    return response
