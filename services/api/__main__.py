"""``python -m services.api``: build settings once and serve the API."""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from libs.common.errors import ConfigurationError
from libs.common.logsetup import configure_logging
from services.api.app import create_app
from services.api.settings import ApiSettings


def main() -> int:
    settings = ApiSettings()
    configure_logging(settings.log_level, "api")
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_context=server_tls(settings),
        print=None,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
    )
    return 0


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


if __name__ == "__main__":
    raise SystemExit(main())
