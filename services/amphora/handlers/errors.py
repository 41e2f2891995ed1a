"""The agent's one error mapping: every failure becomes `{"error": ..., "details": ...}`."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry.trace import SpanKind

from libs.common.agent_contract import ErrorBody
from libs.common.errors import DomainError, InfrastructureError, TransientError
from libs.common.telemetry import context_from_traceparent, tracer

logger = logging.getLogger(__name__)


def _problem(status: int, error: str, details: str | None = None) -> web.Response:
    body = ErrorBody(error=error, details=details).model_dump_json()
    return web.Response(status=status, text=body, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """DomainError -> its http_status with message and detail (the agent's callers are the
    control plane and operators, so HAProxy's output is shown); TransientError -> 503;
    other InfrastructureError -> 500; aiohttp's own HTTP errors keep their status.

    Each request is a span named by its route template, child of the caller's
    ``traceparent``."""
    resource = request.match_info.route.resource
    name = f"agent {request.method} {resource.canonical if resource else 'unmatched'}"
    parent = context_from_traceparent(request.headers.get("traceparent"))
    try:
        with tracer("fulcrum.amphora").start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER
        ):
            response: web.StreamResponse = await handler(request)
        return response
    except DomainError as exc:
        return _problem(exc.http_status, exc.message, exc.detail)
    except TransientError as exc:
        logger.warning("%s %s: %s", request.method, request.path, exc)
        return _problem(503, str(exc))
    except InfrastructureError as exc:
        logger.exception("%s %s failed", request.method, request.path)
        return _problem(500, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _problem(exc.status, exc.reason)
