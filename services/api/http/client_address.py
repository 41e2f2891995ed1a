"""The client's address of a request: the peer's, or, from a trusted reverse proxy, the one its
``X-Forwarded-For`` names.

One place resolves it (``client_address_middleware``); everything after it sees the resolved
address as ``request.remote`` (the login throttle counts failures under it) and the access log
writes it (``ClientAccessLogger``).

Resolution: when the peer is in one of the trusted proxy networks, the client is the right-most
``X-Forwarded-For`` entry (every header line, in order, each split on commas) that is not in
them, or the peer itself when every entry is; an entry that is not an address stops the walk at
the trusted hop to its right (a trusted proxy never writes one, so whoever sent it is not to be
believed). From any other peer ``X-Forwarded-For`` is ignored: a client cannot forge its address.
IPv4-mapped IPv6 addresses count as their IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDED_FOR: Final = "X-Forwarded-For"
CLIENT_ADDRESS: Final = web.RequestKey("client_address", str)


def parse_address(text: str) -> IPAddress | None:
    """The address ``text`` names (``[...]`` around IPv6 allowed; IPv4-mapped IPv6 as IPv4), or
    None when it is not one."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[IPNetwork]
) -> str | None:
    """The client's address of a request from ``peer`` carrying the ``X-Forwarded-For`` header
    lines ``forwarded_for``, given the trusted proxy networks (module docstring)."""
    if peer is None:
        return None
    hop = parse_address(peer)
    if hop is None or not _trusted(hop, proxies):
        return str(hop) if hop is not None else peer
    entries = [entry for line in forwarded_for for entry in line.split(",")]
    for entry in reversed(entries):
        address = parse_address(entry)
        if address is None:
            break
        hop = address
        if not _trusted(hop, proxies):
            break
    return str(hop)


def client_address_middleware(proxies: Sequence[IPNetwork]) -> Middleware:
    """A middleware that hands on the request with ``remote`` the client's address and keeps
    that address under ``CLIENT_ADDRESS`` (for the access log)."""
    trusted = tuple(proxies)

    @web.middleware
    async def resolve_client(request: web.Request, handler: Handler) -> web.StreamResponse:
        address = client_address(request.remote, request.headers.getall(FORWARDED_FOR, ()), trusted)
        if address is None or address == request.remote:
            return await handler(request)
        request[CLIENT_ADDRESS] = address
        return await handler(request.clone(remote=address))

    return resolve_client


class ClientAccessLogger(AccessLogger):
    """aiohttp's access log line (same format) whose ``%a`` is the client's address."""

    def _format_line(
        self, request: BaseRequest, response: web.StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        line = super()._format_line(request, response, time)
        address = request.get(CLIENT_ADDRESS)
        if address is None:
            return line
        return [(key, address if key == "remote_address" else value) for key, value in line]
