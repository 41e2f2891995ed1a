"""``python -m services.housekeeping``: build settings once and run the service."""

from __future__ import annotations

import sys

from aiohttp import web
from pydantic import ValidationError

from libs.common.event_loop import new_event_loop
from libs.common.logsetup import configure_logging
from libs.common.service import freeze_heap_after_start
from services.housekeeping.app import create_app
from services.housekeeping.settings import HousekeepingSettings


def main() -> int:
    try:
        settings = HousekeepingSettings()  # FULCRUM_HOUSEKEEPING_* variables
    except ValidationError as exc:
        print(f"housekeeping: refusing to start: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, "housekeeping")
    app = create_app(settings)
    freeze_heap_after_start(app)
    web.run_app(
        app, host=settings.host, port=settings.port, print=None, loop=new_event_loop("housekeeping")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
