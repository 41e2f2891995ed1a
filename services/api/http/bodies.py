"""Request bodies of Octavia's resources as WSME reads them: the media type, the controller
argument each body is bound to, and validation against a schema.

A POST/PUT body must be JSON (``application/json``, ``text/javascript`` or
``application/javascript``) or WSME's XML (``text/xml``); else 415 "Unknown mimetype: <type>".
JSON must be UTF-8 (else pecan's 400 body). WSME names the controller argument in its messages
(``load_balancer``, ``listener_``, ...): ``ARGUMENTS`` holds them by envelope.

XML is read as WSME reads it: the root element stands for the whole body (its tag is not
looked at), each child element is an attribute, ``<item>`` children make a list (with
``<key>``/``<value>`` inside, a dict), ``nil="true"`` is null and an empty element the empty
string. The result goes through the same validation as JSON (so ``"80"`` is a valid port and
``"true"`` a boolean). A body that is not well-formed XML is, as in WSME, a server-side error:
500, faultcode "Server", the parser's message. Deliberately unlike WSME, an element that names
no attribute is refused as an unknown attribute (WSME skips it): nothing is accepted and
ignored.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar
from xml.etree import ElementTree

from aiohttp import web
from pydantic import BaseModel

from libs.common.errors import DomainError
from services.api.http.errors import FrameworkError
from services.api.http.schemas import parse_body, parse_document

M = TypeVar("M", bound=BaseModel)

JSON_TYPES: Final = frozenset({"application/json", "text/javascript", "application/javascript"})
_FORM: Final = "application/x-www-form-urlencoded"
XML_TYPE: Final = "text/xml"

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


class XmlNotWellFormed(DomainError):
    """WSME's XML parser failing: not a client error to WSME, so a 500 with the parser's
    message (e.g. "not well-formed (invalid token): line 1, column 0")."""

    code = "xml_not_well_formed"
    http_status = 500


def _xml_value(element: ElementTree.Element) -> Any:
    """One element as WSME's XML reader sees it, in JSON's terms."""
    if element.get("nil") == "true":
        return None
    children = list(element)
    if not children:
        return element.text or ""
    if all(child.tag == "item" for child in children):
        pairs = [(item.find("key"), item.find("value")) for item in children]
        if all(key is not None and value is not None for key, value in pairs):
            return {
                str(_xml_value(key)): _xml_value(value)
                for key, value in pairs
                if key is not None and value is not None
            }
        return [_xml_value(item) for item in children]
    return {child.tag: _xml_value(child) for child in children}


def xml_as_json(raw: bytes) -> bytes:
    """A ``text/xml`` body as the JSON body it stands for (see the module docstring)."""
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as exc:
        raise XmlNotWellFormed(str(exc)) from None
    return json.dumps({child.tag: _xml_value(child) for child in root}).encode()


def argument_of(envelope: str, method: str) -> str:
    if method == "PUT" and envelope in _PUT_ARGUMENTS:
        return _PUT_ARGUMENTS[envelope]
    return ARGUMENTS.get(envelope, envelope)


async def raw_body(request: web.Request) -> bytes:
    """The body WSME would parse, as JSON: empty for a form post, XML converted; 415 for a
    media type that is neither; pecan's 400 for JSON that is not UTF-8."""
    raw = await request.read()
    if not raw:
        return raw
    mimetype = request.headers.get("Content-Type", "").split(";", 1)[0].strip()
    if mimetype == _FORM:
        return b""
    if mimetype == XML_TYPE:
        return xml_as_json(raw)
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
