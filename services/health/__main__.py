"""``python -m services.health``: build settings once and run the service."""

from __future__ import annotations

import logging
import sys

from aiohttp import web
from pydantic import ValidationError

from services.health.app import HealthMisconfigured, create_app
from services.health.settings import HealthSettings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = HealthSettings()  # FULCRUM_HEALTH_* variables
        app = create_app(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"FULCRUM_HEALTH_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        print(f"health: refusing to start: {problems}", file=sys.stderr)
        return 2
    except HealthMisconfigured as exc:
        print(f"health: refusing to start: {exc}", file=sys.stderr)
        return 2
    web.run_app(app, host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
