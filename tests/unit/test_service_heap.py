"""A service process's heap after start-up (``freeze_heap_after_start``), in a process of its
own: freezing the test process would keep every later test's objects from the collector."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_SERVICE = """
import asyncio, gc
from aiohttp import web
from libs.common.service import base_app, freeze_heap_after_start

async def main():
    app = base_app("heap")
    seen = []

    async def context(app):
        seen.append(gc.get_freeze_count())
        yield

    app.cleanup_ctx.append(context)
    freeze_heap_after_start(app)
    runner = web.AppRunner(app)
    await runner.setup()
    print(seen[0], gc.get_freeze_count(), len(gc.get_objects()))
    await runner.cleanup()

asyncio.run(main())
"""


def test_a_started_service_keeps_its_start_up_objects_out_of_the_collector() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SERVICE],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    during_start, after_start, tracked = (int(n) for n in done.stdout.split())
    assert during_start == 0  # the contexts start first
    assert after_start > 10_000  # modules, the app, what the contexts made
    assert tracked < after_start / 5  # what a full collection still walks
