"""``python -m services.api``: build settings once and serve the API."""

from __future__ import annotations

import logging

from aiohttp import web

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
        print=None,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
