"""The amphorae a heartbeat may come from: ``amphora_view`` cached in memory.

The receiver looks every heartbeat up here without a database round trip. The whole table
(minus DELETED rows) is reloaded every ``refresh_interval``, and sooner after a miss, so an
amphora booted a moment ago is known by its second heartbeat; each reload also brings the
highest seq another replica accepted (the replay floor, ``AmphoraRecord.seq``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

import asyncpg

from libs.common.database import DATABASE_ERRORS
from services.health.adapters import postgres
from services.health.adapters.postgres import AmphoraRecord

log = logging.getLogger(__name__)

# A burst of unknown ids (a stray sender) costs at most one reload per this many seconds.
_MIN_RELOAD_GAP: Final = 0.2


class AmphoraDirectory:
    def __init__(self, pool: asyncpg.Pool, refresh_interval: float) -> None:
        self._pool = pool
        self._interval = refresh_interval
        self._records: dict[str, AmphoraRecord] = {}
        self._miss = asyncio.Event()
        self._missed = False  # since the last reload began
        self._listeners: list[Callable[[dict[str, AmphoraRecord]], None]] = []
        self._prune_listeners: list[Callable[[dict[str, AmphoraRecord]], None]] = []
        self.loaded = asyncio.Event()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, amphora_id: str) -> AmphoraRecord | None:
        return self._records.get(amphora_id)

    def missed(self) -> None:
        """Ask for an early reload (an id was not found)."""
        self._missed = True
        self._miss.set()

    def on_reload(self, callback: Callable[[dict[str, AmphoraRecord]], None]) -> None:
        """Call ``callback(records)`` after every reload."""
        self._listeners.append(callback)

    def on_prune(self, callback: Callable[[dict[str, AmphoraRecord]], None]) -> None:
        """Call ``callback(records)`` after a reload that found amphorae gone since the previous
        one, or followed a miss (a heartbeat of an unknown id, whose sender may have been
        remembered): what is kept per amphora elsewhere is dropped then, not every second."""
        self._prune_listeners.append(callback)

    async def reload(self) -> None:
        missed, self._missed = self._missed, False
        records = {r.amphora_id: r for r in await postgres.live_amphorae(self._pool)}
        prune = missed or not self._records.keys() <= records.keys()
        self._records = records
        for callback in self._listeners:
            callback(records)
        if prune:
            for callback in self._prune_listeners:
                callback(records)
        self.loaded.set()

    async def run(self) -> None:
        """Reload until cancelled; a failed reload keeps the previous records and retries."""
        while True:
            started = time.monotonic()
            try:
                await self.reload()
            except DATABASE_ERRORS:
                log.exception("amphora directory: reload failed; keeping %d records", len(self))
            self._miss.clear()
            await asyncio.sleep(max(0.0, _MIN_RELOAD_GAP - (time.monotonic() - started)))
            try:
                await asyncio.wait_for(self._miss.wait(), self._interval)
            except TimeoutError:
                pass
