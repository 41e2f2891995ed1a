"""The spare-amphora pool: amphorae booted ahead of need, so a new LB skips the boot.

Spares are ordinary amphorae in status READY (no LB): they heartbeat and fail over like any
other. ``claim`` takes one inside the caller's transaction (FOR UPDATE SKIP LOCKED), so two
provisioners never take the same spare and a rolled-back create gives it back. Housekeeping
decides the pool's size and asks for spares through events (handlers/maintenance.py boots
them); ``refill`` is the provisioner's own loop for standalone use, keeping ``size`` of them
(0 = off, the default); one replica at a time refills (advisory lock).

Creates waiting for an amphora come first: while a load balancer created less than ``defer``
s ago is still PENDING_CREATE, ``refill`` boots nothing (a burst past the pool's size boots its
own amphorae and does not share the CPU with spares that would be claimed after it); the pool
refills once the creates are done. ``defer`` 0 refills at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Final, Protocol

import asyncpg

from libs.common.database import DATABASE_ERRORS
from libs.common.errors import FulcrumError
from libs.common.events import Metadata
from libs.common.readmodel import creates_waiting
from libs.common.repository import AmphoraRepository
from services.provisioner.adapters.postgres import lock_one_spare, ready_spare_ids
from services.provisioner.domain.amphora_records import booted, failed
from services.provisioner.drivers import AmphoraDriver, AmphoraHandle, AmphoraSpec

log = logging.getLogger(__name__)

REFILL_LOCK_KEY: Final = 0x46554C535041  # "FULSPA"
META: Final = Metadata(actor="provisioner-spares")


class SpareContact(Protocol):
    """Contacts spares ahead of their first push (the configurator)."""

    async def warm(self, handle: AmphoraHandle) -> None: ...

    def adopt(self, handle: AmphoraHandle) -> None: ...


class SparePool:
    def __init__(
        self,
        pool: asyncpg.Pool,
        amps: AmphoraRepository,
        driver: AmphoraDriver,
        size: int,
        *,
        claim: bool = True,
        contact: SpareContact | None = None,
        defer: float = 0.0,
    ) -> None:
        """``contact`` reaches spares once they run and when claimed (the configurator), so
        that a claim's push does not pay for the first contact; ``defer``: see the module."""
        self._pool = pool
        self._contact = contact
        self._amps = amps
        self._driver = driver
        self.size = size
        self.claiming = claim
        self._defer = defer

    async def claim(self, conn: asyncpg.Connection) -> AmphoraHandle | None:
        """A running spare, locked for the caller's LB until ``conn``'s transaction ends, or None.
        The caller records its allocation (AmphoraAllocated) in that transaction."""
        if not self.claiming:
            return None
        for _ in range(3):
            amphora_id = await lock_one_spare(conn)
            if amphora_id is None:
                return None
            handle = await self._driver.get(amphora_id)
            if handle is None:  # listed READY but gone: record it and try the next one
                await self._amps.record(
                    amphora_id,
                    [failed(amphora_id, "spare not running")],
                    META,
                    conn=conn,
                )
                continue
            if self._contact is not None:
                self._contact.adopt(handle)
            return handle
        return None

    async def refill(self) -> int:
        """Boot spares one at a time until ``size`` are READY, or until creates wait (see the
        module); returns how many it started.

        Each spare is committed on its own, so it is claimable as soon as it runs.
        """
        started = 0
        while await self._refill_one():
            started += 1
        return started

    async def _refill_one(self) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", REFILL_LOCK_KEY):
                return False
            if len(await ready_spare_ids(conn)) >= self.size:
                return False
            if self._defer > 0 and await creates_waiting(conn, self._defer):
                return False  # the creates first; the next round refills
            amphora_id = str(uuid.uuid4())
            handle = await self._driver.ensure(AmphoraSpec(amphora_id=amphora_id, lb_id=None))
            try:
                if self._contact is not None:
                    await self._contact.warm(handle)
                await self._amps.record(amphora_id, [booted(handle)], META, conn=conn)
            except BaseException:
                await self._driver.delete(amphora_id)
                raise
            return True

    async def run(self, interval: float) -> None:
        """Refill forever; failures are logged and retried at the next interval."""
        while True:
            try:
                if self.size > 0:
                    await self.refill()
            except (FulcrumError, *DATABASE_ERRORS):
                log.exception("spare pool refill failed; retrying in %.1fs", interval)
            await asyncio.sleep(interval)
