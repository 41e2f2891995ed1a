"""``python -m services.health``: build settings once and run the service."""

from __future__ import annotations

import sys

from aiohttp import web
from pydantic import ValidationError

from libs.common.errors import ConfigurationError
from libs.common.event_loop import new_event_loop
from libs.common.logsetup import configure_logging
from libs.common.service import freeze_heap_after_start
from services.health.app import create_app
from services.health.settings import HealthSettings


def main() -> int:
    try:
        settings = HealthSettings()  # FULCRUM_HEALTH_* variables
        configure_logging(settings.log_level, "health")
        app = create_app(settings)
        freeze_heap_after_start(app)
    except ValidationError as exc:
        problems = "; ".join(
            f"FULCRUM_HEALTH_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        print(f"health: refusing to start: {problems}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"health: refusing to start: {exc}", file=sys.stderr)
        return 2
    web.run_app(
        app, host=settings.host, port=settings.port, print=None, loop=new_event_loop("health")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
