"""``python -m services.api``: build settings once and serve the API: the tenant-facing
port (HTTPS with the operator's certificate when configured) and, when configured, the
operator port."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from libs.common import event_loop
from libs.common.errors import ConfigurationError
from libs.common.logsetup import configure_logging
from libs.common.service import freeze_heap_after_start
from services.api.app import create_app
from services.api.http.client_address import ClientAccessLogger
from services.api.settings import ApiSettings

log = logging.getLogger(__name__)


def server_tls(settings: ApiSettings) -> ssl.SSLContext | None:
    """The HTTPS context of the tenant-facing port (TLS 1.2 or newer), or None: plain HTTP.
    Raises ConfigurationError when only one of the certificate and key is given."""
    if not settings.tls_cert_file and not settings.tls_key_file:
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ConfigurationError("FULCRUM_API_TLS_CERT_FILE and _TLS_KEY_FILE go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


async def start_sites(runner: web.AppRunner, settings: ApiSettings) -> None:
    """The tenant-facing site and, with ``operator_port``, the operator site, on a set-up
    ``runner``."""
    tls = server_tls(settings)
    await web.TCPSite(runner, settings.host, settings.port, ssl_context=tls).start()
    if settings.operator_port:
        await web.TCPSite(runner, settings.operator_host, settings.operator_port).start()
    if settings.auth_strategy == "noauth":
        log.warning(
            "AUTHENTICATION IS OFF (FULCRUM_API_AUTH_STRATEGY=noauth): every caller on "
            "%s:%s is an admin of any project. Use keystone outside development.",
            settings.host,
            settings.port,
        )


async def serve(settings: ApiSettings) -> None:
    """Serve until SIGTERM or SIGINT, then close the sites and the app's contexts."""
    access = logging.getLogger("aiohttp.access") if settings.access_log else None
    app = create_app(settings)
    freeze_heap_after_start(app)
    runner = web.AppRunner(app, access_log=access, access_log_class=ClientAccessLogger)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await start_sites(runner, settings)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    settings = ApiSettings()
    configure_logging(settings.log_level, "api")
    event_loop.run(serve(settings), "api")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
