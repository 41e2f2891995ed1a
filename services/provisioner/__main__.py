"""``python -m services.provisioner``: build settings once and run the service."""

from __future__ import annotations

import logging

from aiohttp import web

from services.provisioner.app import create_app
from services.provisioner.settings import ProvisionerSettings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ProvisionerSettings()
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
