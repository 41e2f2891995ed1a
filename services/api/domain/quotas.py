"""Quota checks on create: Octavia's "Quota has been met for resources: X" (403).

Limits come from the project's stored quota (``quota_view``) or the configured defaults; -1 is
unlimited. A create that a finite limit governs counts and appends under the project's lock,
so two concurrent creates cannot both take the last unit; unlimited creates take no lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Final

import asyncpg

from libs.common.errors import Forbidden
from services.api.domain.ports import QuotaStore

QUOTA_LABELS: Final = {
    "loadbalancer": "Load Balancer",
    "listener": "Listener",
    "pool": "Pool",
    "member": "Member",
    "healthmonitor": "Health Monitor",
    "l7policy": "L7 Policy",
    "l7rule": "L7 Rule",
}


class QuotaGuard:
    """``record`` (with quota enforcement on, i.e. any auth strategy but noauth) gives a
    project a quota record the first time it creates something, as Octavia does. A project
    seen with a record is remembered (a record is never removed: a reset keeps it), so its
    later creates do not read ``quota_view`` again after their commit to look for one."""

    def __init__(
        self,
        store: QuotaStore,
        defaults: Mapping[str, int],
        record: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._defaults = dict(defaults)
        self._record = record
        self._recorded: set[str] = set()

    async def limits(self, project_id: str) -> dict[str, int]:
        """Effective limits of a project (stored values, else defaults)."""
        stored = await self._store.quota_limits(project_id)
        if stored:
            self._recorded.add(project_id)
        return {
            name: value if (value := stored.get(name)) is not None else default
            for name, default in self._defaults.items()
        }

    @asynccontextmanager
    async def admit(
        self,
        project_id: str,
        wanted: Mapping[str, int],
        limits: Mapping[str, int] | None = None,
    ) -> AsyncIterator[asyncpg.Connection | None]:
        """Yield a connection whose transaction holds the project's quota lock (append on it),
        or None when no finite limit governs ``wanted``; raises Forbidden when over quota.

        ``limits`` may be read beforehand (``limits(project_id)``) to overlap round trips.
        """
        growing = {name: n for name, n in wanted.items() if n > 0}
        if limits is None and growing:
            limits = await self.limits(project_id)
        governed = [name for name in growing if limits is not None and limits[name] != -1]
        if not governed:
            yield None
        else:
            async with self._store.locked_project(project_id) as conn:
                counts = await self._store.count_live(conn, project_id, governed)
                assert limits is not None
                over = [n for n in governed if counts[n] + growing[n] > limits[n]]
                if over:
                    labels = ", ".join(QUOTA_LABELS[n] for n in over)
                    raise Forbidden(f"Quota has been met for resources: {labels}")
                yield conn
        if self._record is not None and growing and not await self._has_record(project_id):
            await self._record(project_id)
            self._recorded.add(project_id)

    async def _has_record(self, project_id: str) -> bool:
        if project_id not in self._recorded and await self._store.quota_limits(project_id):
            self._recorded.add(project_id)
        return project_id in self._recorded
