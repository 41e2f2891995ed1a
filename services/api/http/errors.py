"""The one HTTP mapping: request ids, content negotiation, and every error as Octavia's fault.

``{"faultcode": "Client"|"Server", "faultstring": ..., "debuginfo": null}`` for DomainErrors,
validation errors, unknown routes and crashes (logged, shown as a generic 500); a 406 for an
unacceptable ``Accept`` uses the API-WG shape, as Octavia's webob layer does. Every response
carries ``x-openstack-request-id``; state-changing requests run in a tracing span.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from libs.common.errors import DomainError, Unauthorized
from libs.common.service import METRICS
from libs.common.telemetry import tracer
from services.api.http.schemas import describe

log = logging.getLogger(__name__)

REQUEST_ID_HEADER: Final = "x-openstack-request-id"
REQUEST_ID: Final = web.RequestKey("request_id", str)
INTERNAL_ERROR: Final = "An unexpected error occurred; the request id identifies it in the logs."
_ACCEPTABLE: Final = frozenset({"", "*/*", "application/*", "application/json"})
_HTTP_MESSAGES: Final = {
    404: "The resource could not be found.",
    405: "The method is not allowed for this resource.",
    413: "The request body is too large.",
}
_tracer = tracer("fulcrum.api")


def fault(status: int, message: str) -> web.Response:
    body = {
        "faultcode": "Client" if status < 500 else "Server",
        "faultstring": message,
        "debuginfo": None,
    }
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


def keystone_error(status: int, title: str, message: str) -> web.Response:
    """Keystone's error body, for identity endpoints and every 401."""
    body = {"error": {"code": status, "title": title, "message": message}}
    response = web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Keystone uri="/v3"'
    return response


def _not_acceptable(request_id: str, accept: str) -> web.Response:
    body = {
        "errors": [
            {
                "status": 406,
                "title": "Not Acceptable",
                "detail": f"Only application/json is available, not {accept}.",
                "request_id": request_id,
            }
        ]
    }
    return web.Response(status=406, body=json.dumps(body).encode(), content_type="application/json")


def acceptable(accept: str) -> bool:
    """Whether an ``Accept`` header admits application/json."""
    return any(part.split(";", 1)[0].strip().lower() in _ACCEPTABLE for part in accept.split(","))


async def _answer(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        if request.method in ("GET", "HEAD"):
            return await handler(request)
        with _tracer.start_as_current_span(f"api {request.method} {request.path}"):
            return await handler(request)
    except Unauthorized as exc:
        return keystone_error(401, "Unauthorized", exc.message)
    except DomainError as exc:
        if exc.http_status >= 500:
            log.warning("%s %s [%s]: %s", request.method, request.path, request_id, exc.detail)
        return fault(exc.http_status, exc.message)
    except ValidationError as exc:
        return fault(400, describe(exc, exc.title))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return fault(exc.status, _HTTP_MESSAGES.get(exc.status, exc.reason))
    except Exception:
        log.exception("%s %s [%s] failed", request.method, request.path, request_id)
        return fault(500, INTERNAL_ERROR)


@web.middleware
async def octavia_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = f"req-{uuid.uuid4()}"
    request[REQUEST_ID] = request_id
    accept = request.headers.get("Accept")
    if accept is not None and not acceptable(accept):
        response: web.StreamResponse = _not_acceptable(request_id, accept)
    else:
        response = await _answer(request, handler, request_id)
    response.headers[REQUEST_ID_HEADER] = request_id
    request.app[METRICS].inc(f"responses_{response.status // 100}xx_total")
    return response
