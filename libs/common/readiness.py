"""Readiness: named checks run concurrently, each within a timeout, answered at ``/readyz``.

A check is an async callable that returns a short detail when its dependency is usable and
raises (``NotReady``, or the dependency's own error) when it is not. Light imports only: the
amphora agent uses it as the control-plane services do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from libs.common.errors import FulcrumError

__all__ = ["CHECK_TIMEOUT", "Check", "CheckResult", "NotReady", "Readiness"]

# Each check gets this long; /readyz answers within it (plus overhead) even if one hangs.
CHECK_TIMEOUT: Final = 1.0

Check = Callable[[], Coroutine[Any, Any, str]]


class NotReady(FulcrumError):
    """Raised by a check when its dependency is not usable; the message is the detail shown."""


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


class Readiness:
    """The named checks of one service; ``respond`` is its ``/readyz`` handler:

    200 (every check ok) or 503, with the body
    ``{"status": "ready"|"not ready", "service": str, "checks": {name: {"ok", "detail"}}}``.
    No check registered means ready.
    """

    def __init__(self, service: str, *, timeout: float = CHECK_TIMEOUT) -> None:
        self.service = service
        self.timeout = timeout
        self._checks: dict[str, Check] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._checks

    def add(self, name: str, check: Check) -> None:
        """Register ``check`` under ``name``; raises ValueError when the name is taken."""
        if name in self._checks:
            raise ValueError(f"readiness check {name!r} is already registered")
        self._checks[name] = check

    async def run(self) -> dict[str, CheckResult]:
        """Run every check concurrently; one that raises or outlasts ``timeout`` is not ok.

        A check still running at the timeout is cancelled and not awaited, so a check that
        ignores cancellation cannot hold the answer back.
        """
        tasks = {
            name: asyncio.create_task(check(), name=f"readiness check {name}")
            for name, check in self._checks.items()
        }
        try:
            if tasks:
                await asyncio.wait(tasks.values(), timeout=self.timeout)
            return {name: self._outcome(task) for name, task in tasks.items()}
        finally:
            for task in tasks.values():
                if not task.done():
                    task.cancel()
                    task.add_done_callback(_forget)

    async def respond(self, request: web.Request) -> web.Response:
        results = await self.run()
        ready = all(result.ok for result in results.values())
        body = {
            "status": "ready" if ready else "not ready",
            "service": self.service,
            "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in results.items()},
        }
        return web.json_response(body, status=200 if ready else 503)

    def _outcome(self, task: asyncio.Task[str]) -> CheckResult:
        if not task.done():
            return CheckResult(False, f"no answer within {self.timeout:g} s")
        if task.cancelled():
            return CheckResult(False, "cancelled")
        error = task.exception()
        if isinstance(error, NotReady):
            return CheckResult(False, str(error))
        if error is not None:
            return CheckResult(False, f"{type(error).__name__}: {error}".rstrip(": "))
        return CheckResult(True, task.result())


def _forget(task: asyncio.Task[str]) -> None:
    """Retrieve a timed-out check's outcome: nobody waits for it any more."""
    if not task.cancelled():
        task.exception()
