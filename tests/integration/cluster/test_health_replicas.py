"""Two real health service processes on one database: amphorae send each heartbeat to the next
health endpoint in turn (as Octavia's and Fulcrum's agents do), or to every endpoint, and the
recorded result is the one a single replica gives: the same operating status changes, once
each, and one failover per silent amphora. With one replica killed the other carries on."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import asyncpg
import pytest

from deploy.local.ports import free_tcp_port, free_udp_port
from libs.common import heartbeat_codec as codec
from libs.common.settings import HEARTBEAT_KEY_ENV
from libs.common.streams import StreamId
from tests.integration.cluster.nats_fixtures import (  # noqa: F401 (fixture)
    ServiceProcess,
    service_processes,
)
from tests.integration.health.conftest import KEY, Site, count_events, create_site, load

Endpoint = tuple[str, int]
BEAT = 0.1


@dataclass
class Amphorae:
    """Heartbeats of several sites over loopback UDP, each site's beats going round-robin over
    its endpoints; ``members`` is what every beat reports."""

    sock: socket.socket = field(default_factory=lambda: socket.socket(type=socket.SOCK_DGRAM))
    routes: dict[str, tuple[Site, list[Endpoint], bool]] = field(default_factory=dict)
    members: tuple[str, str] = ("UP", "UP")
    _seq: int = 1000
    _turn: int = 0

    def beat_to(self, site: Site, endpoints: Sequence[Endpoint], *, every: bool = False) -> None:
        """Beats of ``site`` go to the next of ``endpoints`` in turn (``every``: to all)."""
        self.routes[site.amphora_id] = (site, list(endpoints), every)

    def silence(self, site: Site) -> None:
        self.routes.pop(site.amphora_id, None)

    async def run(self) -> None:
        while True:
            self._turn += 1
            for site, endpoints, every in list(self.routes.values()):
                self._seq += 1
                datagram = codec.encode(site.message(self._seq, members=self.members), KEY.encode())
                for endpoint in endpoints if every else [endpoints[self._turn % len(endpoints)]]:
                    self.sock.sendto(datagram, endpoint)
            await asyncio.sleep(BEAT)


@pytest.fixture
def amphorae() -> Iterator[Amphorae]:
    beating = Amphorae()
    try:
        yield beating
    finally:
        beating.sock.close()


def health_environment(pg_dsn: str, nats_url: str, port: int, udp_port: int) -> dict[str, str]:
    """Fast timings: 1 s heartbeat timeout, scans every 0.2 s."""
    settings = {
        "POSTGRES__DSN": pg_dsn,
        "NATS__URL": nats_url,
        "PORT": str(port),
        "UDP_PORT": str(udp_port),
        "HEARTBEAT_TIMEOUT": "1.0",
        "HEALTH_CHECK_INTERVAL": "0.2",
        "STALE_GRACE": "1.0",
        "FLUSH_INTERVAL": "0.1",
        "REFRESH_INTERVAL": "0.2",
        "RELAY__POLL_INTERVAL": "0.5",
    }
    return {f"FULCRUM_HEALTH_{k}": v for k, v in settings.items()} | {HEARTBEAT_KEY_ENV: KEY}


async def status_changes(db: asyncpg.Pool, site: Site) -> int:
    return await count_events(
        db, "OperatingStatusChanged", StreamId.loadbalancer_status(site.lb_id)
    )


async def failovers(db: asyncpg.Pool, site: Site) -> int:
    return await count_events(db, "AmphoraFailed", StreamId.amphora(site.amphora_id))


async def statuses(db: asyncpg.Pool, site: Site) -> tuple[str, ...]:
    """The LB's operating status and its members' (m1, m2)."""
    state = await load(db, site.lb_id)
    assert state.loadbalancer is not None
    members = [state.members[member_id].operating_status.value for member_id in site.member_ids]
    return (state.loadbalancer.operating_status.value, *members)


async def test_two_health_replicas_record_what_one_would(
    pg_dsn: str,
    nats_url: str,
    db: asyncpg.Pool,
    amphorae: Amphorae,
    service_processes: Callable[..., ServiceProcess],  # noqa: F811
) -> None:
    replicas: list[ServiceProcess] = []
    endpoints: list[Endpoint] = []
    for _ in range(2):
        port, udp_port = free_tcp_port(), free_udp_port()
        environment = health_environment(pg_dsn, nats_url, port, udp_port)
        replicas.append(service_processes("health", environment, port))
        endpoints.append(("127.0.0.1", udp_port))
    for replica in replicas:
        await replica.wait_ready()

    # control: one replica hears it all; shared: each replica every other beat; both: each
    # replica every beat, the same datagrams at once.
    control, shared, both, doomed = [await create_site(db) for _ in range(4)]
    amphorae.beat_to(control, endpoints[:1])
    amphorae.beat_to(shared, endpoints)
    amphorae.beat_to(both, endpoints, every=True)
    amphorae.beat_to(doomed, endpoints)
    beating = asyncio.create_task(amphorae.run())
    try:
        await asyncio.sleep(2.0)
        amphorae.members = ("UP", "DOWN")
        amphorae.silence(doomed)
        await asyncio.sleep(3.0)
        for site in (shared, both):
            assert await statuses(db, site) == await statuses(db, control)
            assert await status_changes(db, site) == await status_changes(db, control) >= 2
        assert await failovers(db, doomed) == 1, "the silent amphora failed over once"
        assert await failovers(db, shared) == await failovers(db, both) == 0
        assert await failovers(db, control) == 0
        active = [await r.metric("scanner_active") for r in replicas]
        assert sorted(active) == [0.0, 1.0], f"one active stale scanner, not {active}"

        # Kill the active scanner's replica: the other takes the beats and the scan over.
        survivor, victim = (replicas[0], replicas[1]) if active[1] else (replicas[1], replicas[0])
        victim.kill(signal.SIGKILL)
        alive = endpoints[replicas.index(survivor)]
        amphorae.beat_to(control, [alive])  # shared keeps sending half its beats to the dead
        late = await create_site(db)
        amphorae.beat_to(late, endpoints)
        changes_before = await status_changes(db, shared)
        await asyncio.sleep(1.5)
        amphorae.members = ("DOWN", "DOWN")
        amphorae.silence(late)
        await asyncio.sleep(3.5)
        assert await survivor.metric("scanner_active") == 1.0
        assert await statuses(db, shared) == await statuses(db, control)
        assert await status_changes(db, shared) == await status_changes(db, control)
        assert await status_changes(db, shared) > changes_before
        assert await failovers(db, late) == 1, "the survivor failed the silent amphora over"
        assert await failovers(db, doomed) == 1
        assert await failovers(db, shared) == await failovers(db, control) == 0
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
