"""The amphorae a heartbeat may come from: ``amphora_view`` cached in memory.

The receiver looks every heartbeat up here without a database round trip. The whole table
(minus DELETED rows) is reloaded every ``refresh_interval``; between those, the ids the
receiver missed (an amphora booted a moment ago, a spare allocated since) are looked up alone,
at most every ``_MIN_RELOAD_GAP`` s, so such an amphora is known by its second heartbeat without
the whole table read again for each one a fleet's creation boots. Each load also brings the
highest seq another replica accepted (the replay floor, ``AmphoraRecord.seq``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Final

import asyncpg

from libs.common.database import DATABASE_ERRORS
from services.health.adapters import postgres
from services.health.adapters.postgres import AmphoraRecord

log = logging.getLogger(__name__)

# A burst of unknown ids (a stray sender) costs at most one reload per this many seconds.
_MIN_RELOAD_GAP: Final = 0.2
# More missed ids than this between two reloads are answered by a whole reload (a flood of
# strays or a restarted fleet), not by a query naming each.
_MAX_MISSED: Final = 256


class AmphoraDirectory:
    def __init__(self, pool: asyncpg.Pool, refresh_interval: float) -> None:
        self._pool = pool
        self._interval = refresh_interval
        self._records: dict[str, AmphoraRecord] = {}
        self._miss = asyncio.Event()
        self._missed: set[str] = set()  # since the last load began
        self._overflowed = False  # more than _MAX_MISSED since the last load began
        self._listeners: list[Callable[[dict[str, AmphoraRecord]], None]] = []
        self._prune_listeners: list[Callable[[dict[str, AmphoraRecord]], None]] = []
        self.loaded = asyncio.Event()
        # When the last whole load that succeeded began (monotonic): every amphora booted
        # before then that is not DELETED is in ``_records``.
        self._whole_since = -math.inf

    def __len__(self) -> int:
        return len(self._records)

    def get(self, amphora_id: str) -> AmphoraRecord | None:
        return self._records.get(amphora_id)

    def unheard(
        self, heard: Mapping[str, float], before: float, booted_within: float
    ) -> list[str] | None:
        """The known amphorae not heard since ``before`` (``heard``: amphora id -> receipt
        time of its latest sign of life, monotonic), or None when the last whole load began
        ``booted_within`` s ago or longer: an amphora booted since that load is missing here,
        and one booted that recently must not be left out."""
        if time.monotonic() - self._whole_since >= booted_within:
            return None
        return [a for a in self._records if heard.get(a, -math.inf) < before]

    def missed(self, amphora_id: str) -> None:
        """Ask for an early look-up of ``amphora_id`` (not found, or its record is out of date)."""
        if len(self._missed) < _MAX_MISSED:
            self._missed.add(amphora_id)
        else:
            self._overflowed = True
        self._miss.set()

    def on_reload(self, callback: Callable[[dict[str, AmphoraRecord]], None]) -> None:
        """Call ``callback(records)`` after every load (whole or of missed ids)."""
        self._listeners.append(callback)

    def on_prune(self, callback: Callable[[dict[str, AmphoraRecord]], None]) -> None:
        """Call ``callback(records)`` after a load that found amphorae gone since the previous
        one, or left a missed id unknown (a stray sender, which may have been remembered): what
        is kept per amphora elsewhere is dropped then, not every second nor at every new
        amphora's first heartbeat."""
        self._prune_listeners.append(callback)

    def _take_missed(self) -> tuple[set[str], bool]:
        missed, overflowed = self._missed, self._overflowed
        self._missed, self._overflowed = set(), False
        return missed, overflowed

    async def reload(self) -> None:
        """Load the whole table."""
        missed, overflowed = self._take_missed()
        started = time.monotonic()
        records = {r.amphora_id: r for r in await postgres.live_amphorae(self._pool)}
        gone = not self._records.keys() <= records.keys()
        self._install(records, prune=gone or overflowed or not missed <= records.keys())
        self._whole_since = started

    async def reload_missed(self) -> None:
        """Look up the ids missed since the last load (the whole table after more than
        ``_MAX_MISSED``); the other records stay as they are."""
        missed, overflowed = self._take_missed()
        if overflowed:
            self._missed |= missed
            self._overflowed = True
            await self.reload()
            return
        if not missed:
            return
        try:
            rows = await postgres.live_amphorae_among(self._pool, missed)
        except BaseException:
            self._missed |= missed  # looked up at the next load
            raise
        found = {r.amphora_id: r for r in rows}
        records = {k: v for k, v in self._records.items() if k not in missed} | found
        self._install(records, prune=not missed <= found.keys())

    def _install(self, records: dict[str, AmphoraRecord], *, prune: bool) -> None:
        self._records = records
        for callback in self._listeners:
            callback(records)
        if prune:
            for callback in self._prune_listeners:
                callback(records)
        self.loaded.set()

    async def run(self) -> None:
        """Reload the whole table every ``refresh_interval`` and look missed ids up between;
        a failed load keeps the previous records and retries."""
        next_whole = 0.0
        while True:
            started = time.monotonic()
            whole = started >= next_whole
            try:
                if whole:
                    await self.reload()
                else:
                    await self.reload_missed()
            except DATABASE_ERRORS:
                log.exception("amphora directory: reload failed; keeping %d records", len(self))
            if whole:
                next_whole = started + self._interval
            self._miss.clear()
            if self._missed or self._overflowed:  # missed while loading
                self._miss.set()
            await asyncio.sleep(max(0.0, _MIN_RELOAD_GAP - (time.monotonic() - started)))
            try:
                await asyncio.wait_for(self._miss.wait(), max(0.0, next_whole - time.monotonic()))
            except TimeoutError:
                pass
