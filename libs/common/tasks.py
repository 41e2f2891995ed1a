"""Background tasks tied to a block, with no heavy imports (the amphora agent boots with it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

__all__ = ["background"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``coro`` as a task; a crash is logged loudly; cancelled when the block exits."""
    task = asyncio.create_task(coro, name=name)

    def report(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("background task %s died", name, exc_info=done.exception())

    task.add_done_callback(report)
    try:
        yield
    finally:
        # Cancel until it is done: on Python 3.11 a wait_for inside the task (asyncpg's,
        # nats-py's, our own) can swallow a cancellation that lands as its awaitable completes.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            await task
