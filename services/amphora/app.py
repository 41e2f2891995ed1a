"""Wiring of the amphora agent: the aiohttp app, HAProxy's lifecycle, and the mTLS listener."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from libs.common.metrics import Metrics
from libs.common.private_files import write_private_file
from libs.common.tasks import background
from services.amphora.adapters.certificates import CertificateDirectory
from services.amphora.adapters.haproxy import HaproxyDataPlane
from services.amphora.adapters.keepalived import KeepalivedVrrp
from services.amphora.adapters.netns import enter_network_namespace
from services.amphora.adapters.nftables import Nftables
from services.amphora.adapters.security_groups import VipSecurityGroups
from services.amphora.adapters.tls import AgentTLS
from services.amphora.adapters.udp import UdpDataPlane
from services.amphora.adapters.vip import VipInterface
from services.amphora.handlers.api import AgentHandlers
from services.amphora.handlers.errors import error_middleware
from services.amphora.handlers.security_groups import SecurityGroupHandlers
from services.amphora.handlers.vrrp import VrrpHandlers
from services.amphora.heartbeat import STAT_COLUMNS, HeartbeatConfig, heartbeat_ctx
from services.amphora.settings import AmphoraSettings

logger = logging.getLogger(__name__)

DATAPLANE = web.AppKey("dataplane", HaproxyDataPlane)
UDP = web.AppKey("udp", UdpDataPlane)
# Full HAProxy configs of large load balancers are pushed in one body.
_MAX_BODY_BYTES = 16 * 1024 * 1024


async def _haproxy_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Adopt a running HAProxy or prepare to start one lazily; stop it on shutdown."""
    dataplane = app[DATAPLANE]
    await dataplane.prepare()
    yield
    await dataplane.stop()


async def _udp_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """UDP listeners stop with the agent, as HAProxy's do."""
    yield
    udp = app[UDP]
    if udp.config_sha256 is not None:
        await udp.discard()
    await udp.close()


def create_app(settings: AmphoraSettings, tls: AgentTLS) -> web.Application:
    """The agent app; HAProxy starts with the first pushed config and stops at cleanup."""
    dataplane = HaproxyDataPlane(
        settings.haproxy_bin,
        settings.state_dir,
        reload_timeout=settings.reload_timeout,
        drain_timeout=settings.drain_timeout,
    )
    app = web.Application(middlewares=[error_middleware], client_max_size=_MAX_BODY_BYTES)
    app[DATAPLANE] = dataplane
    metrics = Metrics("fulcrum_agent")
    app.cleanup_ctx.append(_haproxy_lifecycle)
    # UDP in the kernel (nftables), only where the amphora has a namespace of its own.
    udp = UdpDataPlane(
        Nftables(settings.nft_bin),
        own_namespace=settings.netns is not None or settings.vip_interface is not None,
    )
    app[UDP] = udp
    app.cleanup_ctx.append(_udp_lifecycle)
    # Heartbeats (services/amphora/heartbeat.py); misconfigured ones refuse the start.
    heartbeat = HeartbeatConfig.from_settings(settings)
    if heartbeat is not None:
        app.cleanup_ctx.append(
            heartbeat_ctx(
                heartbeat,
                lambda: dataplane.heartbeat_stat(STAT_COLUMNS),
                settings.state_dir,
                dataplane.on_load,
                udp.heartbeat_part,
                metrics,
                dataplane.cpu_seconds,
            )
        )
    handlers = AgentHandlers(
        amphora_id=settings.amphora_id,
        lb_id=settings.lb_id,
        dataplane=dataplane,
        certificates=CertificateDirectory(dataplane.certs_dir),
        tls=tls,
        udp=udp,
        metrics=metrics,
        vip_interface=settings.vip_interface,
    )
    app.add_routes(handlers.routes())
    # --- VRRP (issue 6 part B): VIP plumbing and keepalived, on amphorae with a VIP interface.
    vrrp = _vrrp(settings)
    if vrrp is not None:
        app.cleanup_ctx.append(_vrrp_lifecycle(vrrp, settings.bind_host))
    app.add_routes(VrrpHandlers(vrrp).routes())
    # --- end VRRP ---
    groups = VipSecurityGroups(Nftables(settings.nft_bin)) if settings.vip_interface else None
    app.add_routes(SecurityGroupHandlers(groups).routes())
    return app


# --- VRRP (issue 6 part B) ---
def _vrrp(settings: AmphoraSettings) -> KeepalivedVrrp | None:
    if settings.vip_interface is None:
        return None
    return KeepalivedVrrp(
        settings.keepalived_bin,
        settings.state_dir,
        VipInterface(settings.vip_interface),
        # HAProxy's pid file (services/amphora/adapters/haproxy.py), for the check.
        settings.state_dir / "haproxy.pid",
        settle_timeout=settings.vrrp_settle_timeout,
    )


def _vrrp_lifecycle(
    vrrp: KeepalivedVrrp, own_address: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Adopt or prepare keepalived; stop it before HAProxy stops (it then drops the VIP).

    At start the amphora announces its own address (gratuitous ARP): a neighbour (a member, a
    peer) that knew an earlier amphora at this address would otherwise keep its old MAC."""

    async def announce() -> None:
        with contextlib.suppress(ValueError):
            if not ipaddress.ip_address(own_address).is_unspecified:
                await vrrp.interface.announce(own_address)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await vrrp.prepare()
        async with background(announce(), "address announcement"):
            yield
        await vrrp.shutdown()

    return ctx


# --- end VRRP ---


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    settings: AmphoraSettings,
    stopping: asyncio.Event | None = None,
    listening: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (or, when given, until ``stopping`` is set: the caller
    then owns the signals), then stop HAProxy and return.

    The bound port is written to `settings.effective_port_file` once connections are accepted,
    then passed to ``listening``.
    """
    if settings.netns:  # VRRP block (issue 6 part B): first, while the process has one thread
        enter_network_namespace(settings.netns)
    tls = await AgentTLS.delivered(
        settings.ca_cert, settings.server_cert, settings.server_key, settings.cert_wait
    )
    runner = web.AppRunner(create_app(settings, tls), handle_signals=False)
    if stopping is None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
    await runner.setup()
    try:
        sock = _bind(settings.bind_host, settings.bind_port)
        site = web.SockSite(runner, sock, ssl_context=tls.context)
        await site.start()
        port = sock.getsockname()[1]
        port_text = f"{port}\n".encode()
        write_private_file(settings.effective_port_file, port_text, 0o644, durable=False)
        logger.info(
            "amphora agent %s listening on %s:%d", settings.amphora_id, settings.bind_host, port
        )
        if listening is not None:
            listening(port)
        await stopping.wait()
        logger.info("amphora agent %s stopping", settings.amphora_id)
    finally:
        await runner.cleanup()
