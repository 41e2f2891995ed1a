"""``execute(loaded=...)`` on a real Postgres: it decides on the caller's ``read`` instead of
loading again, and when either stream moved since that read the append refuses it and the
command is decided again on a fresh load (no lost update, no Conflict)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState, OperatingStatus
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import CommandFactory, LoadBalancerRepository
from tests.integration.test_status_stream import active_lb

META = Metadata(actor="test")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def repo(db: asyncpg.Pool) -> LoadBalancerRepository:
    return LoadBalancerRepository(PostgresEventStore(db), snapshot_every=3)


def renamer(seen: list[int], name: str) -> CommandFactory:
    def rename(state: LoadBalancerState) -> c.Command:
        seen.append(state.revision)
        return c.UpdateLoadBalancer(changes={"name": name}, now=NOW)

    return rename


async def test_a_current_read_is_decided_on_without_a_second_load(
    repo: LoadBalancerRepository,
) -> None:
    lb_id = await active_lb(repo, "127.77.3.10")
    loaded = await repo.read(lb_id)
    seen: list[int] = []

    outcome = await repo.execute(lb_id, renamer(seen, "renamed"), META, loaded=loaded)

    assert seen == [loaded.state.revision]
    assert outcome.state.loadbalancer is not None
    assert outcome.state.loadbalancer.name == "renamed"
    assert await repo.load(lb_id) == outcome.state


@pytest.mark.parametrize("moved", ["intent", "status"])
async def test_a_stale_read_is_refused_and_decided_again_on_a_fresh_load(
    repo: LoadBalancerRepository, moved: str
) -> None:
    lb_id = await active_lb(repo, "127.77.3.11")
    loaded = await repo.read(lb_id)
    if moved == "intent":  # a change applied meanwhile: two events
        await repo.execute(lb_id, c.UpdateLoadBalancer(changes={"description": "d"}, now=NOW), META)
        await repo.execute(lb_id, c.ApplyChanges(), META)
    else:
        statuses = c.RecordOperatingStatuses({lb_id: OperatingStatus.ERROR})
        await repo.execute(lb_id, statuses, META)
    seen: list[int] = []

    await repo.execute(lb_id, renamer(seen, "renamed"), META, loaded=loaded)

    moves = 2 if moved == "intent" else 1
    assert seen == [loaded.state.revision, loaded.state.revision + moves]
    lb = (await repo.load(lb_id)).loadbalancer
    assert lb is not None and lb.name == "renamed"
    if moved == "intent":
        assert lb.description == "d"  # the other write is not lost
    else:
        assert lb.operating_status == OperatingStatus.ERROR
