"""The amphora directory against a real Postgres: a missed id is looked up alone (the whole
table is read at the refresh interval only), a stray id prunes, a flood of them reads the
whole table."""

from __future__ import annotations

import uuid

import asyncpg

from services.health.handlers.directory import AmphoraDirectory
from tests.integration.health.conftest import allocate, create_site


def recorded(directory: AmphoraDirectory) -> list[set[str]]:
    """The ids every prune was called with, in order."""
    prunes: list[set[str]] = []
    directory.on_prune(lambda records: prunes.append(set(records)))
    return prunes


async def test_a_missed_amphora_is_looked_up_alone_without_pruning(db: asyncpg.Pool) -> None:
    first = await create_site(db)
    directory = AmphoraDirectory(db, 600)
    prunes = recorded(directory)
    await directory.reload()
    booted, unasked = await create_site(db), await create_site(db)
    directory.missed(booted.amphora_id)  # its first heartbeat
    await directory.reload_missed()
    record = directory.get(booted.amphora_id)
    assert record is not None and record.lb_id == booted.lb_id
    assert directory.get(first.amphora_id) is not None
    assert directory.get(unasked.amphora_id) is None  # until the whole table is read
    assert prunes == []
    await directory.reload()
    assert directory.get(unasked.amphora_id) is not None
    assert prunes == []


async def test_a_spare_allocated_since_the_last_load_is_looked_up_again(
    db: asyncpg.Pool,
) -> None:
    site = await create_site(db, spare_first=True)
    directory = AmphoraDirectory(db, 600)
    await directory.reload()
    spare = directory.get(site.amphora_id)
    assert spare is not None and spare.lb_id is None
    await allocate(db, site)
    directory.missed(site.amphora_id)  # a beat with listeners from a record naming no LB
    await directory.reload_missed()
    allocated = directory.get(site.amphora_id)
    assert allocated is not None and allocated.lb_id == site.lb_id


async def test_a_stray_id_prunes_and_a_flood_of_them_reads_the_whole_table(
    db: asyncpg.Pool,
) -> None:
    known = await create_site(db)
    directory = AmphoraDirectory(db, 600)
    prunes = recorded(directory)
    await directory.reload()
    directory.missed(str(uuid.uuid4()))  # a sender the store does not know
    await directory.reload_missed()
    assert prunes == [{known.amphora_id}]
    assert len(directory) == 1
    later = await create_site(db)
    for _ in range(300):
        directory.missed(str(uuid.uuid4()))
    await directory.reload_missed()
    assert directory.get(later.amphora_id) is not None  # the whole table, not 300 ids
    assert prunes == [{known.amphora_id}, {known.amphora_id, later.amphora_id}]
