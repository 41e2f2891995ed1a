"""``python -m services.provisioner``: build settings once and run the service."""

from __future__ import annotations

from aiohttp import web

from libs.common.logsetup import configure_logging
from services.provisioner.app import create_app
from services.provisioner.settings import ProvisionerSettings


def main() -> int:
    settings = ProvisionerSettings()
    configure_logging(settings.log_level, "provisioner")
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
