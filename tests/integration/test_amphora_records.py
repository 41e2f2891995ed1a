"""Amphora records on a real Postgres (``AmphoraRepository``): the view row an append writes,
its creation time kept across later appends, and an append after a record the caller loaded,
refused when the stream moved since and retried on a fresh load."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from libs.common.domain.amphora import Amphora, AmphoraStatus
from libs.common.events import Metadata
from libs.common.events import amphora as amp_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.readmodel import api_time
from libs.common.repository import AmphoraRepository

META = Metadata(actor="test-provisioner")


@pytest.fixture
def amps(db: asyncpg.Pool) -> AmphoraRepository:
    return AmphoraRepository(PostgresEventStore(db))


def booted(amphora_id: str) -> amp_ev.AmphoraBooted:
    return amp_ev.AmphoraBooted(
        amphora_id=amphora_id,
        driver="process",
        compute_id=f"pid-{amphora_id[:8]}",
        agent_url="https://127.0.0.1:1",
        lb_network_ip="127.0.0.1",
    )


async def view_row(db: asyncpg.Pool, amphora_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT version, status, lb_id, created_at, body FROM amphora_view WHERE id = $1",
        amphora_id,
    )
    assert row is not None
    return row


async def occurred(db: asyncpg.Pool, amphora_id: str) -> list[str | None]:
    """``api_time`` of each event of the amphora's stream, in order."""
    rows = await db.fetch(
        "SELECT occurred_at FROM events WHERE stream_id = $1 ORDER BY stream_version",
        f"amphora-{amphora_id}",
    )
    return [api_time(r["occurred_at"]) for r in rows]


async def test_the_view_row_keeps_its_creation_and_shows_the_last_update(
    db: asyncpg.Pool, amps: AmphoraRepository
) -> None:
    amphora_id = str(uuid.uuid4())
    await amps.record(amphora_id, [booted(amphora_id)], META)
    first = await view_row(db, amphora_id)
    body = json.loads(first["body"])
    assert (first["version"], first["status"]) == (1, "READY")
    assert body["created_at"] == api_time(first["created_at"])
    assert body["updated_at"] is None

    lb_id = str(uuid.uuid4())
    allocated = amp_ev.AmphoraAllocated(amphora_id=amphora_id, loadbalancer_id=lb_id)
    await amps.record(amphora_id, [allocated], META)
    second = await view_row(db, amphora_id)
    body = json.loads(second["body"])
    boot_time, allocation_time = await occurred(db, amphora_id)
    assert (second["version"], second["status"], second["lb_id"]) == (2, "ALLOCATED", lb_id)
    assert second["created_at"] == first["created_at"]
    assert (body["created_at"], body["updated_at"]) == (boot_time, allocation_time)
    assert (body["loadbalancer_id"], body["status"]) == (lb_id, "ALLOCATED")


async def test_an_append_after_a_loaded_record_retries_on_a_fresh_load_when_stale(
    db: asyncpg.Pool, amps: AmphoraRepository
) -> None:
    amphora_id = str(uuid.uuid4())
    fresh = await amps.load(amphora_id)
    assert fresh == Amphora()
    await amps.record(amphora_id, [booted(amphora_id)], META, loaded=fresh)
    assert (await amps.load(amphora_id)).status == AmphoraStatus.READY

    # ``fresh`` is stale now: the append after it is refused, the next one loads.
    failed = amp_ev.AmphoraFailed(amphora_id=amphora_id, reason="test")
    after = await amps.record(amphora_id, [failed], META, loaded=fresh)
    assert after.version == 2 and after.failure_reason == "test"
    assert after == await amps.load(amphora_id)
    assert (await view_row(db, amphora_id))["version"] == 2
