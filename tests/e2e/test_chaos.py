"""Nothing a crash can take down: kill -9 every part of ``fulcrum up`` under load.

10 LBs serve a steady client load (a new connection per request) while 20 creates and
updates are in flight; then each service is killed in turn, all four at once, Postgres, and
NATS, waiting for readiness between rounds. Zero requests may fail through the VIPs of LBs
that were ACTIVE before a round; every LB in flight ends ACTIVE; no LB ever has two amphorae;
every stored event reaches the bus once (after dedup by event id) and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import nats
import pytest

from libs.common import subjects
from libs.common.bus import connect_options
from libs.common.settings import NatsSettings
from tests.e2e.chaos import SERVICES, Tenant, VipProber, kill, wait_ready
from tests.e2e.conftest import Backend, Stack, start_stack, stop_stack

pytestmark = pytest.mark.timeout(900)

ROUNDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((name, (name,)) for name in SERVICES),
    ("all four services", SERVICES),
    ("postgres", ("postgres",)),
    ("nats", ("nats",)),
)


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("chaos")
    running = start_stack(state, "--port", "0")
    try:
        yield running
    finally:
        stop_stack(running.proc, state)


async def bus_event_ids(reader: NatsSettings, expected: int, timeout: float = 30) -> list[str]:
    """Every event id on the stream, read from the start with an ordered consumer."""
    nc = await nats.connect(**connect_options(reader), connect_timeout=3)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            info = await js.stream_info(subjects.STREAM_NAME)
            if info.state.messages >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        sub = await js.subscribe(
            subjects.ALL_EVENTS, stream=subjects.STREAM_NAME, ordered_consumer=True
        )
        seen: list[str] = []
        for _ in range(info.state.messages):
            msg = await sub.next_msg(timeout=5)
            seen.append(json.loads(msg.data)["event_id"])
        return seen
    finally:
        await nc.close()


async def store_facts(dsn: str) -> tuple[set[str], int, list[asyncpg.Record], set[str]]:
    """Event ids, outbox backlog, LBs with two ALLOCATED amphorae, and live amphora ids."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = {str(r["event_id"]) for r in await conn.fetch("SELECT event_id FROM events")}
        backlog = await conn.fetchval("SELECT count(*) FROM outbox")
        doubles = await conn.fetch(
            "SELECT lb_id, count(*) AS n FROM amphora_view WHERE status = 'ALLOCATED' "
            "GROUP BY lb_id HAVING count(*) > 1"
        )
        live = await conn.fetch(
            "SELECT id FROM amphora_view WHERE status IN ('BOOTING', 'READY', 'ALLOCATED')"
        )
        return ids, int(backlog), list(doubles), {r["id"] for r in live}
    finally:
        await conn.close()


async def amphora_of(tenant: Tenant, lb_id: str) -> str:
    status, body = await tenant.call("GET", f"/v2/octavia/amphorae?loadbalancer_id={lb_id}")
    assert status == 200, body
    (amphora,) = [a for a in body["amphorae"] if a["status"] == "ALLOCATED"]
    return str(amphora["id"])


def reconciliation_lines(state: Path, amphora_ids: Iterable[str]) -> str:
    """The services' log lines on orphan reconciliation and on ``amphora_ids`` (a failure's
    evidence: the stack's state dir does not outlive the next test runs)."""
    wanted = ("orphan", "reconcil", "unowned", "Traceback", *amphora_ids)
    lines = []
    for name in ("provisioner.log", "housekeeping.log"):
        with contextlib.suppress(OSError):
            for line in (state / name).read_text(errors="replace").splitlines():
                if any(word in line for word in wanted):
                    lines.append(f"{name}: {line}")
    return "\n".join(lines[-60:])


def agent_pids(state: Path, amphora_ids: Iterable[str]) -> dict[str, int]:
    """The agent pid of each amphora (the process driver's pid files)."""
    return {a: int((state / "amphorae" / a / "agent.pid").read_text()) for a in amphora_ids}


def running_agents(state: Path) -> set[str]:
    """Amphora ids whose agent process runs (the process driver's pid files)."""
    alive = set()
    for pid_file in (state / "amphorae").glob("*/agent.pid"):
        try:
            if Path(f"/proc/{int(pid_file.read_text())}").exists():
                alive.add(pid_file.parent.name)
        except (OSError, ValueError):
            continue
    return alive


async def test_kill_every_part_under_load(chaos_stack: Stack, backends: list[Backend]) -> None:
    stack = chaos_stack
    prober = VipProber(interval=0.05)
    async with aiohttp.ClientSession() as session:
        tenant = Tenant(session, stack.api_url, stack.secret("admin.token"))
        serving = await asyncio.gather(
            *(tenant.create_lb(f"serving-{i}", backends[i % 2].port) for i in range(10))
        )
        for lb_id in serving:
            lb = await tenant.wait_active(lb_id)
            prober.vips[lb_id] = f"http://{lb['vip_address']}/"
        amphorae_before = {lb_id: await amphora_of(tenant, lb_id) for lb_id in serving}
        agents_before = agent_pids(stack.state, amphorae_before.values())
        prober.start()
        report: list[str] = []
        try:
            for index, (label, victims) in enumerate(ROUNDS):
                active_before = list(prober.vips)
                round_start = time.monotonic()
                creates = [
                    asyncio.create_task(
                        tenant.create_lb(f"r{index}-new-{i}", backends[i % 2].port, timeout=90)
                    )
                    for i in range(10)
                ]
                updates = [asyncio.create_task(tenant.rename(lb_id)) for lb_id in serving]
                await asyncio.sleep(0.3)  # some in the API, some in the provisioner
                killed = kill(stack.state, victims)
                assert set(killed) == set(victims), killed
                waited = await wait_ready(stack.state, after=killed)
                new_ids = await asyncio.gather(*creates)
                await asyncio.gather(*updates)
                for lb_id in (*new_ids, *serving):
                    await tenant.wait_active(lb_id)
                failed = prober.failures_since(round_start, active_before)
                report.append(f"{label}: ready again in {waited:.2f} s, {len(failed)} failed")
                assert not failed, f"round {label}: requests failed through VIPs: {failed[:5]}"
                for lb_id in new_ids:
                    await tenant.delete(lb_id)
        finally:
            await prober.stop()
        print("\n".join(report), f"\n{prober.sent} requests through the VIPs")
        assert prober.sent > 500 and not prober.failures, prober.failures[:5]

        # Healthy amphorae were adopted, never replaced nor restarted.
        assert {lb_id: await amphora_of(tenant, lb_id) for lb_id in serving} == amphorae_before
        assert agent_pids(stack.state, amphorae_before.values()) == agents_before

    # An agent booted by a provisioner killed before it recorded the boot is reaped by
    # housekeeping's reconciliation (orphan grace 30 s, every 10 s): wait that out.
    deadline = time.monotonic() + 90
    while True:
        ids, backlog, doubles, live = await store_facts(stack.pg_dsn)
        agents = running_agents(stack.state)
        if (backlog == 0 and agents == live) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert not doubles, f"LBs with two ALLOCATED amphorae: {doubles}"
    assert backlog == 0, "the outbox did not drain"
    if agents != live:
        conn = await asyncpg.connect(stack.pg_dsn)
        rows = await conn.fetch(
            "SELECT id, lb_id, status FROM amphora_view WHERE id = ANY($1::text[])",
            list(agents ^ live),
        )
        await conn.close()
        raise AssertionError(
            f"agents {agents - live} vs amphorae {live - agents}: {rows}\n"
            + reconciliation_lines(stack.state, agents ^ live)
        )
    on_bus = set(await bus_event_ids(stack.nats_settings("events"), len(ids)))
    assert ids <= on_bus, f"{len(ids - on_bus)} stored events never reached the bus"
    # Housekeeping keeps appending (its job runs every few seconds): what reached the bus
    # since the store was read must be stored too, never published without being stored.
    stored_now, *_ = await store_facts(stack.pg_dsn)
    assert on_bus <= stored_now, f"{len(on_bus - stored_now)} events on the bus were never stored"
