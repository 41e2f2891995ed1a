"""Undoing amphorae: the one place that stops an amphora, releases what it held and records
what became of it.

``delete`` on the driver stops the amphora and frees what it held (its address, port,
namespace, container, files); the agent client's cached connection is dropped; the amphora's
stream gets DELETED, or ERROR (``AmphoraErrored``) when its build or teardown is given up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg

from libs.common.errors import FulcrumError
from libs.common.events import Event, Metadata
from libs.common.repository import AmphoraRepository
from services.provisioner.domain.amphora_records import given_up, torn_down
from services.provisioner.drivers import AmphoraDriver

log = logging.getLogger(__name__)

# Errors of the event store's connection: the transaction is lost, so nothing more can be
# recorded in it; the consumer retries the whole step.
STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)

ForgetAmphora = Callable[[str], Awaitable[None]]


def gives_up(exc: Exception) -> bool:
    """Whether a failed build or step is given up (undone, and the LB or amphora marked):
    every error but one of the event store's connection, whose step the consumer retries."""
    return isinstance(exc, FulcrumError) or not isinstance(exc, STORE_ERRORS)


def describe(exc: Exception) -> str:
    """The error's message, or its type when it has none."""
    return str(exc) or type(exc).__name__


class Compensation:
    """Stops, releases and records amphorae that are given up or no longer needed."""

    def __init__(
        self, driver: AmphoraDriver, amps: AmphoraRepository, forget: ForgetAmphora
    ) -> None:
        self._driver = driver
        self._amps = amps
        self._forget = forget

    async def give_up(
        self,
        amphorae: Mapping[str, Sequence[Event]],
        reason: str,
        conn: asyncpg.Connection,
        metadata: Metadata,
    ) -> None:
        """Undo half-built amphorae (id -> what the build did to it that is not recorded
        yet): stop and release each (a failure to is logged: the driver reconciliation
        removes what is left), then record those that booted or were claimed as ERROR with
        ``reason``."""
        for amphora_id, unrecorded in amphorae.items():
            try:
                await self._release(amphora_id)
            except Exception:
                log.exception("amphora %s: not removed after its build was given up", amphora_id)
            await self._record_given_up(amphora_id, reason, conn, metadata, unrecorded)

    async def retire(self, amphora_id: str, conn: asyncpg.Connection, metadata: Metadata) -> None:
        """Tear down an amphora that is no longer needed and record it DELETED. When the
        driver cannot remove it, record it ERROR (teardown given up) and raise the error."""
        try:
            await self._release(amphora_id)
        except STORE_ERRORS:
            raise
        except Exception as exc:
            await self._record_given_up(amphora_id, f"teardown failed: {exc}", conn, metadata)
            raise
        events = torn_down(await self._amps.load(amphora_id), amphora_id)
        if events:
            await self._amps.record(amphora_id, events, metadata, conn=conn)

    async def _release(self, amphora_id: str) -> None:
        await self._driver.delete(amphora_id)
        await self._forget(amphora_id)

    async def _record_given_up(
        self,
        amphora_id: str,
        reason: str,
        conn: asyncpg.Connection,
        metadata: Metadata,
        unrecorded: Sequence[Event] = (),
    ) -> None:
        record = await self._amps.load(amphora_id)
        events = given_up(record, amphora_id, reason, unrecorded)
        if events:
            log.warning("amphora %s: given up (%s)", amphora_id, reason)
            await self._amps.record(amphora_id, events, metadata, conn=conn)
