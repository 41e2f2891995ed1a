"""``python -m services.provisioner``: build settings once and run the service."""

from __future__ import annotations

from aiohttp import web

from libs.common.event_loop import new_event_loop
from libs.common.logsetup import configure_logging
from libs.common.service import freeze_heap_after_start
from services.provisioner.app import create_app
from services.provisioner.settings import ProvisionerSettings


def main() -> int:
    settings = ProvisionerSettings()
    configure_logging(settings.log_level, "provisioner")
    app = create_app(settings)
    freeze_heap_after_start(app)
    web.run_app(
        app, host=settings.host, port=settings.port, print=None, loop=new_event_loop("provisioner")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
