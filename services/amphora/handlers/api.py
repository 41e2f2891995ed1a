"""HTTP handlers of the agent's /v1 API; the contract is in the `services.amphora` docstring."""

from __future__ import annotations

import time
from typing import Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from libs.common.agent_contract import (
    API_PREFIX,
    API_VERSION,
    AgentInfo,
    ConfigApplied,
    RuntimeChanges,
    RuntimeChangesApplied,
    ServerCertificate,
    ServerCertificateRotated,
    ServerChange,
    ServerChanged,
    UdpConfig,
)
from libs.common.errors import ValidationFailed
from libs.common.metrics import Metrics
from libs.common.readiness import NotReady, Readiness
from libs.common.telemetry import tracer
from services.amphora.adapters.certificates import CertificateDirectory
from services.amphora.adapters.haproxy import HaproxyDataPlane
from services.amphora.adapters.tls import AgentTLS
from services.amphora.adapters.udp import UdpDataPlane

_Model = TypeVar("_Model", bound=BaseModel)
# How long /readyz waits for HAProxy to answer on its stats socket.
_STATS_SOCKET_PATIENCE: Final = 0.5


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=model.model_dump_json(), content_type="application/json"
    )


async def _parse(request: web.Request, model: type[_Model]) -> _Model:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise ValidationFailed("invalid request body", detail=str(exc)) from None


def _flag(request: web.Request, name: str, *, default: bool) -> bool:
    """A boolean query parameter: `true` or `false` (any case); raises ValidationFailed on
    anything else."""
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise ValidationFailed(f"{name} must be true or false, not {value!r}")
    return value.lower() == "true"


class AgentHandlers:
    """The agent's endpoints, bound to one amphora's data plane, certificates and TLS."""

    def __init__(
        self,
        *,
        amphora_id: str,
        lb_id: str,
        dataplane: HaproxyDataPlane,
        certificates: CertificateDirectory,
        tls: AgentTLS,
        udp: UdpDataPlane,
        metrics: Metrics,
        vip_interface: str | None = None,
    ) -> None:
        self.amphora_id = amphora_id
        self.vip_interface = vip_interface
        self.lb_id = lb_id
        self.dataplane = dataplane
        self.certificates = certificates
        self.tls = tls
        self.udp = udp
        self.readiness = Readiness("amphora")
        self.metrics = metrics
        self._pushes = metrics.counter(
            "config_pushes_total",
            "HAProxy configurations pushed to this agent, by result (applied or refused).",
            ["result"],
        )
        self._reloads = metrics.histogram(
            "haproxy_reload_duration_seconds",
            "Seconds from a pushed configuration to HAProxy serving it (write, check, reload).",
        )
        self.readiness.add("haproxy", self._haproxy_ready)

    def routes(self) -> list[web.RouteDef]:
        prefix = API_PREFIX
        return [
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readiness.respond),
            web.get("/metrics", self.metrics.respond),
            web.get(f"{prefix}/info", self.info),
            web.put(f"{prefix}/haproxy/config", self.put_config),
            web.get(f"{prefix}/haproxy/config", self.get_config),
            web.delete(f"{prefix}/haproxy", self.delete_haproxy),
            web.get(f"{prefix}/haproxy/stats", self.stats),
            web.post(f"{prefix}/haproxy/servers/{{backend}}/{{server}}", self.change_server),
            web.post(f"{prefix}/haproxy/servers", self.change_servers),
            web.put(f"{prefix}/certificates/{{name}}.pem", self.put_certificate),
            web.get(f"{prefix}/certificates/{{name}}.pem", self.get_certificate),
            web.delete(f"{prefix}/certificates/{{name}}.pem", self.delete_certificate),
            web.put(f"{prefix}/server-certificate", self.rotate_server_certificate),
            web.put(f"{prefix}/udp/config", self.put_udp_config),
            web.get(f"{prefix}/udp", self.udp_status),
            web.delete(f"{prefix}/udp", self.delete_udp),
        ]

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _haproxy_ready(self) -> str:
        """Ready: HAProxy runs and answers on its stats socket, or no config was ever pushed
        (the agent then waits for one), or the one installed takes no connections (it runs no
        HAProxy). A config with a proxy installed but not served is not ready."""
        dataplane = self.dataplane
        if not dataplane.is_running():
            if dataplane.config_text() is None:
                return "no configuration pushed yet; ready to accept one"
            if not dataplane.needs_running():
                return "the configuration has no proxy taking connections; HAProxy not needed"
            raise NotReady(
                "haproxy is not running although a configuration is installed; "
                "push the configuration again to start it"
            )
        pid = await dataplane.serving_pid(_STATS_SOCKET_PATIENCE)
        return f"haproxy pid {pid} answers on its stats socket"

    async def info(self, request: web.Request) -> web.Response:
        dataplane = self.dataplane
        return _json(
            AgentInfo(
                amphora_id=self.amphora_id,
                lb_id=self.lb_id,
                api_version=API_VERSION,
                haproxy_version=dataplane.version,
                haproxy_running=dataplane.is_running(),
                config_sha256=dataplane.config_sha256(),
                stats_socket=str(dataplane.stats_socket),
                certs_dir=str(dataplane.certs_dir),
                external_check_command=(
                    str(dataplane.ping_check) if dataplane.ping_check is not None else None
                ),
                has_vip_interface=self.vip_interface is not None,
                udp_config_sha256=self.udp.config_sha256,
            )
        )

    async def put_config(self, request: web.Request) -> web.Response:
        text = await request.text()
        if not text.strip():
            raise ValidationFailed("empty configuration")
        reload = _flag(request, "reload", default=True)
        check_later = _flag(request, "check_later", default=False)
        digest = await self._apply(text, reload=reload, check_later=check_later)
        response = _json(ConfigApplied(sha256=digest), status=202)
        response.headers["ETag"] = f'"{digest}"'
        return response

    async def _apply(self, text: str, *, reload: bool, check_later: bool) -> str:
        """A pushed config applied (``HaproxyDataPlane.apply``), counted and timed."""
        started = time.monotonic()
        with tracer("fulcrum.amphora").start_as_current_span(
            "haproxy reload" if reload else "haproxy validate"
        ):
            try:
                digest = await self.dataplane.apply(text, reload=reload, check_later=check_later)
            except Exception:
                self._pushes.labels(result="refused").inc()
                raise
        self._pushes.labels(result="applied").inc()
        if reload:
            self._reloads.observe(time.monotonic() - started)
        return digest

    async def get_config(self, request: web.Request) -> web.Response:
        text = self.dataplane.config_text()
        if text is None:
            raise web.HTTPNotFound(reason="no configuration installed")
        digest = self.dataplane.config_sha256()
        return web.Response(text=text, content_type="text/plain", headers={"ETag": f'"{digest}"'})

    async def delete_haproxy(self, request: web.Request) -> web.Response:
        await self.dataplane.discard()
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(await self.dataplane.show_stat())

    async def change_server(self, request: web.Request) -> web.Response:
        backend, server = request.match_info["backend"], request.match_info["server"]
        change = await _parse(request, ServerChange)
        commands = await self.dataplane.change_server(backend, server, change)
        return _json(ServerChanged(backend=backend, server=server, commands=commands))

    async def change_servers(self, request: web.Request) -> web.Response:
        batch = await _parse(request, RuntimeChanges)
        changed = []
        for change in batch.changes:
            commands = await self.dataplane.change_server(change.backend, change.server, change)
            changed.append(
                ServerChanged(backend=change.backend, server=change.server, commands=commands)
            )
        digest = await self._apply(batch.config, reload=False, check_later=True)
        return _json(RuntimeChangesApplied(changed=changed, sha256=digest))

    async def put_certificate(self, request: web.Request) -> web.Response:
        stored = self.certificates.put(request.match_info["name"], await request.read())
        return _json(stored)

    async def get_certificate(self, request: web.Request) -> web.Response:
        return _json(self.certificates.get(request.match_info["name"]))

    async def delete_certificate(self, request: web.Request) -> web.Response:
        self.certificates.delete(request.match_info["name"])
        return web.Response(status=204)

    async def rotate_server_certificate(self, request: web.Request) -> web.Response:
        body = await _parse(request, ServerCertificate)
        cert = self.tls.rotate(body.cert_pem.encode(), body.key_pem.encode())
        return _json(
            ServerCertificateRotated(
                serial=f"{cert.serial_number:x}", not_after=cert.not_valid_after_utc
            )
        )

    async def put_udp_config(self, request: web.Request) -> web.Response:
        digest = await self.udp.apply(await _parse(request, UdpConfig))
        return _json(ConfigApplied(sha256=digest), status=202)

    async def udp_status(self, request: web.Request) -> web.Response:
        return _json(self.udp.status())

    async def delete_udp(self, request: web.Request) -> web.Response:
        await self.udp.discard()
        return web.Response(status=204)
