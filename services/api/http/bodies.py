"""Request bodies of Octavia's resources as WSME reads them: the media type, the controller
argument each body is bound to, and validation against a schema.

A POST/PUT body must be JSON (``application/json``, ``text/javascript`` or
``application/javascript``; else 415 "Unknown mimetype: <type>"), and JSON must be UTF-8 (else
pecan's 400 body). WSME names the controller argument in its messages (``load_balancer``,
``listener_``, ...): ``ARGUMENTS`` holds them by envelope.
"""

from __future__ import annotations

from typing import Final, TypeVar

from aiohttp import web
from pydantic import BaseModel

from libs.common.errors import DomainError
from services.api.http.errors import FrameworkError
from services.api.http.schemas import parse_body, parse_document

M = TypeVar("M", bound=BaseModel)

JSON_TYPES: Final = frozenset({"application/json", "text/javascript", "application/javascript"})
_FORM: Final = "application/x-www-form-urlencoded"

# Envelope -> Octavia's controller argument; a PUT differs only for L7 rules.
ARGUMENTS: Final = {
    "loadbalancer": "load_balancer",
    "listener": "listener_",
    "pool": "pool_",
    "member": "member_",
    "members": "members_",
    "healthmonitor": "health_monitor_",
    "l7policy": "l7policy_",
    "rule": "rule_",
    "quota": "quotas",
    "flavor": "flavor_",
    "flavorprofile": "flavor_profile_",
    "availability_zone": "availability_zone_",
    "availability_zone_profile": "availability_zone_profile_",
}
_PUT_ARGUMENTS: Final = {"rule": "l7rule_"}


class UnknownMimeType(DomainError):
    """WSME's UnknownMimeType: a body in a media type it does not read (415)."""

    code = "unknown_mimetype"
    http_status = 415


def argument_of(envelope: str, method: str) -> str:
    if method == "PUT" and envelope in _PUT_ARGUMENTS:
        return _PUT_ARGUMENTS[envelope]
    return ARGUMENTS.get(envelope, envelope)


async def raw_body(request: web.Request) -> bytes:
    """The body WSME would parse: empty for a form post; 415 for a media type that is not
    JSON; pecan's 400 for JSON that is not UTF-8."""
    raw = await request.read()
    if not raw:
        return raw
    mimetype = request.headers.get("Content-Type", "").split(";", 1)[0].strip()
    if mimetype == _FORM:
        return b""
    if mimetype not in JSON_TYPES:
        raise UnknownMimeType(f"Unknown mimetype: {mimetype}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameworkError(400, "Bad Request", "") from None
    return raw


async def read_input(request: web.Request, model: type[M], envelope: str) -> M:
    """``{"<envelope>": {...}}`` of the request, validated (400/415 as Octavia answers)."""
    raw = await raw_body(request)
    return parse_body(model, envelope, raw, argument_of(envelope, request.method))


async def read_document(request: web.Request, model: type[M], envelope: str) -> M:
    """A body that is ``model`` itself (the batch member list), validated."""
    return parse_document(model, argument_of(envelope, request.method), await raw_body(request))
