"""Client of the amphora agent's mutual-TLS API (contract: `services.amphora` docstring).

Every aiohttp failure is translated in one place into AgentUnavailable (retry later) or
AgentRejected (the agent refused the request; retrying the same request will not help).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import aiohttp
from opentelemetry.trace import SpanKind
from pydantic import TypeAdapter, ValidationError

from libs.common.agent_contract import (
    API_PREFIX,
    PUSHED_CONTENT_TYPE,
    AgentInfo,
    CertificateStored,
    ConfigApplied,
    ErrorBody,
    NamedServerChange,
    NewServer,
    RuntimeChanges,
    RuntimeChangesApplied,
    ServerCertificate,
    ServerCertificateRotated,
    ServerChange,
    ServerChanged,
    ServerState,
    StatsRow,
    UdpConfig,
    UdpStatus,
    VipAddress,
    VrrpConfig,
    VrrpStatus,
)
from libs.common.errors import InfrastructureError, TransientError
from libs.common.telemetry import inject_traceparent, tracer

__all__ = [
    "AgentRejected",
    "AgentUnavailable",
    "AmphoraAgentClient",
    "client_ssl_context",
]

_DEFAULT_TIMEOUT: Final = 60.0
_DEFAULT_CONNECT_TIMEOUT: Final = 10.0
_STATS_ROWS: Final = TypeAdapter(list[StatsRow])


class AgentUnavailable(TransientError):
    """The agent could not be reached, did not answer in time, failed TLS, or answered 5xx."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AgentRejected(InfrastructureError):
    """The agent answered 4xx: `error` is its message, `details` e.g. HAProxy's output."""

    def __init__(self, status: int, error: str, details: str | None = None) -> None:
        detail = f": {_alert_lines(details)}" if details else ""
        super().__init__(f"agent refused ({status}): {error}{detail}")
        self.status = status
        self.error = error
        self.details = details


def _alert_lines(details: str, limit: int = 600) -> str:
    """HAProxy's [ALERT] lines (what a user needs to see), bounded in length."""
    alerts = [line.strip() for line in details.splitlines() if "[ALERT]" in line]
    return (" | ".join(alerts) or details.strip())[:limit]


def client_ssl_context(
    ca_cert: Path, client_cert: Path, client_key: Path, *, check_hostname: bool
) -> ssl.SSLContext:
    """TLS >= 1.2 client context trusting only the deployment CA, presenting our client cert."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    context.load_cert_chain(str(client_cert), str(client_key))
    return context


def _retryable_connect_failure(exc: BaseException) -> bool:
    """Failures before the request was sent, worth retrying while an amphora boots. TLS
    failures are not among them: a wrong certificate stays wrong."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return False
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def _translate(exc: BaseException, where: str) -> AgentUnavailable:
    """The one mapping from aiohttp/asyncio failures to this module's errors."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return AgentUnavailable(f"TLS with the agent at {where} failed: {exc}")
    if isinstance(exc, TimeoutError):
        return AgentUnavailable(f"the agent at {where} did not answer in time")
    return AgentUnavailable(f"the agent at {where} is unreachable: {exc}")


class AmphoraAgentClient:
    """One amphora agent, reached at `base_url` (e.g. `https://127.0.0.1:9443`).

    Server verification: the chain must lead to `ca_cert`. With `server_name` (the amphora
    id, which the agent's certificate carries as a DNS SAN) the name is checked too, whatever
    address is dialled; without it only the CA signature is checked. Use as an async context
    manager (or call `close`); the HTTP session is created on first use, inside the loop.

    ``ssl_context`` (from ``client_ssl_context`` over the same files) lets many clients share
    one context instead of loading the certificates again for each.

    Connection failures are retried `connect_attempts` times with doubling delays from
    `retry_delay` up to `max_retry_delay` (about 3 s with the defaults); nothing else is retried.
    """

    def __init__(
        self,
        base_url: str,
        ca_cert: Path,
        client_cert: Path,
        client_key: Path,
        *,
        server_name: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        connect_timeout: float = _DEFAULT_CONNECT_TIMEOUT,
        connect_attempts: int = 6,
        retry_delay: float = 0.1,
        max_retry_delay: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.server_name = server_name
        self._ssl = ssl_context or client_ssl_context(
            ca_cert, client_cert, client_key, check_hostname=server_name is not None
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._connect_attempts = max(1, connect_attempts)
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- API ---------------------------------------------------------------------------------

    async def info(self) -> AgentInfo:
        return AgentInfo.model_validate_json(await self._request("GET", "/info"))

    async def apply_config(
        self, text: str, *, reload: bool = True, check_later: bool = False
    ) -> str:
        """Install a complete haproxy.cfg; returns its sha256. Raises AgentRejected (400, with
        HAProxy's output in `details`) when HAProxy refuses it; the old config keeps serving.
        ``reload=False`` stores it for the next reload (runtime changes already made).
        ``check_later``: a file stored for the next reload is answered before the agent's
        `haproxy -c`, and a refusal comes with the next push of a file that loads nothing; a
        file without a proxy while no HAProxy runs is installed unchecked (nothing loads it)."""
        flags = ([] if reload else ["reload=false"]) + (["check_later=true"] if check_later else [])
        path = "/haproxy/config" + ("?" + "&".join(flags) if flags else "")
        body = await self._request("PUT", path, data=text.encode())
        return ConfigApplied.model_validate_json(body).sha256

    async def get_config(self) -> str | None:
        """The installed haproxy.cfg, or None when there is none."""
        try:
            return (await self._request("GET", "/haproxy/config")).decode()
        except AgentRejected as exc:
            if exc.status == 404:
                return None
            raise

    async def stop_haproxy(self) -> None:
        """Stop HAProxy and drop its config; idempotent."""
        await self._request("DELETE", "/haproxy")

    async def stats(self) -> list[StatsRow]:
        """`show stat` rows: frontends, backends and servers."""
        return _STATS_ROWS.validate_json(await self._request("GET", "/haproxy/stats"))

    async def server_change(
        self,
        backend: str,
        server: str,
        *,
        weight: int | None = None,
        state: ServerState | None = None,
        add: NewServer | None = None,
        delete: bool = False,
    ) -> ServerChanged:
        """Runtime change of one server (see ServerChange). Raises pydantic's ValidationError
        for an incoherent change before anything is sent; AgentRejected with 404 for an
        unknown backend/server and 409 when HAProxy refuses."""
        change = ServerChange(weight=weight, state=state, add=add, delete=delete)
        body = await self._request(
            "POST",
            f"/haproxy/servers/{backend}/{server}",
            data=change.model_dump_json(exclude_defaults=True).encode(),
            content_type="application/json",
        )
        return ServerChanged.model_validate_json(body)

    async def runtime_changes(
        self, changes: Sequence[NamedServerChange], config: str
    ) -> RuntimeChangesApplied:
        """Server changes, then ``config`` stored for the next reload, in one request (see
        RuntimeChanges). Raises AgentRejected with 404 for an unknown backend/server and 409
        when HAProxy refuses a change (the earlier ones stay made, the config is not stored),
        400 when the stored config was refused by an earlier check."""
        body = await self._request(
            "POST",
            "/haproxy/servers",
            data=RuntimeChanges(changes=list(changes), config=config).model_dump_json().encode(),
            content_type="application/json",
        )
        return RuntimeChangesApplied.model_validate_json(body)

    async def upload_certificate(self, name: str, pem: bytes) -> CertificateStored:
        """Store `<name>.pem` (0600) in the agent's certs dir; reference `.path` in configs."""
        body = await self._request("PUT", f"/certificates/{name}.pem", data=pem)
        return CertificateStored.model_validate_json(body)

    async def get_certificate(self, name: str) -> CertificateStored | None:
        """The stored bundle's sha256 and path, or None when absent."""
        try:
            body = await self._request("GET", f"/certificates/{name}.pem")
        except AgentRejected as exc:
            if exc.status == 404:
                return None
            raise
        return CertificateStored.model_validate_json(body)

    async def delete_certificate(self, name: str) -> None:
        await self._request("DELETE", f"/certificates/{name}.pem")

    async def rotate_server_certificate(
        self, cert_pem: bytes, key_pem: bytes
    ) -> ServerCertificateRotated:
        """Replace the agent's own server certificate; new connections see it at once."""
        payload = ServerCertificate(cert_pem=cert_pem.decode(), key_pem=key_pem.decode())
        body = await self._request(
            "PUT",
            "/server-certificate",
            data=payload.model_dump_json().encode(),
            content_type="application/json",
        )
        return ServerCertificateRotated.model_validate_json(body)

    # -- UDP listeners (nftables in the amphora; services/amphora/adapters/udp.py) ----------

    async def apply_udp(self, config: UdpConfig) -> str:
        """Serve ``config``'s UDP listeners (an empty one: none); returns its sha256. Raises
        AgentRejected: 400 with nft's output, 409 on an amphora that cannot serve UDP."""
        body = await self._request(
            "PUT",
            "/udp/config",
            data=config.model_dump_json().encode(),
            content_type="application/json",
        )
        return ConfigApplied.model_validate_json(body).sha256

    async def udp_status(self) -> UdpStatus:
        """The UDP configuration in force and each member's state."""
        return UdpStatus.model_validate_json(await self._request("GET", "/udp"))

    # -- VIP and VRRP (amphorae with a VIP interface; see services/amphora/handlers/vrrp.py) --

    async def vrrp_status(self) -> VrrpStatus:
        """The VIP interface (None: VIPs need no plumbing), keepalived's state, held VIPs."""
        return VrrpStatus.model_validate_json(await self._request("GET", "/vrrp"))

    async def apply_vrrp(self, config: str, virtual_addresses: list[str]) -> VrrpStatus:
        """Install keepalived.conf and run it (reload when running; otherwise clear the VIPs
        and start). Raises AgentRejected: 400 with keepalived's output, 409 without a VIP
        interface."""
        payload = VrrpConfig(config=config, virtual_addresses=virtual_addresses)
        body = await self._request(
            "PUT",
            "/vrrp/config",
            data=payload.model_dump_json().encode(),
            content_type="application/json",
        )
        return VrrpStatus.model_validate_json(body)

    async def stop_vrrp(self) -> None:
        """Stop keepalived and forget its config; idempotent."""
        await self._request("DELETE", "/vrrp")

    async def plug_vip(self, address: str) -> VrrpStatus:
        """Hold ``address`` on the VIP interface (SINGLE), announced by gratuitous ARP."""
        body = await self._request(
            "PUT",
            "/vip",
            data=VipAddress(address=address).model_dump_json().encode(),
            content_type="application/json",
        )
        return VrrpStatus.model_validate_json(body)

    async def unplug_vip(self, address: str) -> None:
        await self._request("DELETE", f"/vip/{address}")

    async def apply_security_groups(self, ruleset: str) -> None:
        """Replace the amphora's VIP filter (nft table ``inet fulcrum_sg``) by ``ruleset``;
        AgentRejected (409) on an amphora without a VIP interface, (400) when nft refuses."""
        await self._request("PUT", "/security-groups", data=ruleset.encode())

    # -- transport ---------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        content_type: str = PUSHED_CONTENT_TYPE,
    ) -> bytes:
        """Send one request and return the body of a 2xx answer; raises AgentUnavailable or
        AgentRejected, never an aiohttp exception. A client span (``agent <METHOD> <route>``)
        covers it and its ``traceparent`` goes with the request."""
        name = f"agent call {method} {_route_of(path)}"
        with tracer(__name__).start_as_current_span(name, kind=SpanKind.CLIENT) as span:
            span.set_attribute("fulcrum.agent", self.base_url)
            return await self._send(method, path, data=data, content_type=content_type)

    async def _send(
        self, method: str, path: str, *, data: bytes | None, content_type: str
    ) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = f"{self.base_url}{API_PREFIX}{path}"
        headers = {"Content-Type": content_type} if data is not None else {}
        inject_traceparent(headers)
        delay = self._retry_delay
        for attempt in range(1, self._connect_attempts + 1):
            try:
                async with self._session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    ssl=self._ssl,
                    server_hostname=self.server_name,
                ) as response:
                    body = await response.read()
                    status = response.status
                break
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt < self._connect_attempts and _retryable_connect_failure(exc):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry_delay)
                    continue
                raise _translate(exc, self.base_url) from exc
        if status < 400:
            return body
        error = _error_body(body)
        if status >= 500:
            raise AgentUnavailable(f"agent error ({status}): {error.error}", status=status)
        raise AgentRejected(status, error.error, error.details)


def _route_of(path: str) -> str:
    """``path`` without its query, names of certificates, VIPs and servers as placeholders."""
    parts = path.split("?", 1)[0].split("/")
    if (
        len(parts) > 2
        and parts[1] in ("certificates", "vip", "haproxy")
        and parts[2]
        not in (
            "config",
            "stats",
        )
    ):
        if parts[1] == "haproxy":
            return "/haproxy/servers/{backend}/{server}" if len(parts) > 3 else "/haproxy/servers"
        return f"/{parts[1]}/{{name}}"
    return "/".join(parts)


def _error_body(body: bytes) -> ErrorBody:
    try:
        return ErrorBody.model_validate_json(body)
    except ValidationError:
        return ErrorBody(error=body.decode(errors="replace")[:500] or "no body")
