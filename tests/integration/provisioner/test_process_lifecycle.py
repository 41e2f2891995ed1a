"""The provisioner with the process driver: real agents, real HAProxy, real HTTP via the VIP.

LBs are created through the LoadBalancerRepository (as the API does), so these tests need no
API; the relay inside the provisioner carries the events to its own consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg

from libs.common.domain import commands as c
from libs.common.domain.model import LoadBalancerState
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from tests import builders as b
from tests.integration.provisioner.conftest import (
    Backend,
    RunningProvisioner,
    free_port,
    provisioner_settings,
)

META = Metadata(actor="test", project_id=b.PROJECT)


async def wait_status(
    repo: LoadBalancerRepository, lb_id: str, wanted: str, timeout: float = 30
) -> LoadBalancerState:
    deadline = time.monotonic() + timeout
    while True:
        state = await repo.load(lb_id)
        lb = state.loadbalancer
        if lb is not None and lb.provisioning_status.value == wanted:
            return state
        if time.monotonic() > deadline:
            status = lb.provisioning_status.value if lb else None
            reason = lb.provisioning_error if lb else ""
            raise AssertionError(f"LB is {status} ({reason}), wanted {wanted}")
        await asyncio.sleep(0.05)


async def get_names(url: str, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(url, headers={"Connection": "close"}) as resp:
                seen[await resp.text()] += 1
    return seen


def http_lb(vip: str, port: int, backends: list[Backend]) -> c.CreateLoadBalancer:
    lb = b.loadbalancer(vip)
    pool = b.pool(lb)
    listener = b.listener(lb, port, default_pool_id=pool.id)
    members = tuple(b.member(pool, be.port) for be in backends)
    return c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)


async def test_create_serves_through_the_vip_then_update_then_delete(
    provisioner: RunningProvisioner, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    port = free_port("127.77.0.10")
    command = http_lb("127.77.0.10", port, backends[:2])
    lb_id = command.loadbalancer.id
    await repo.execute(lb_id, command, META)
    state = await wait_status(repo, lb_id, "ACTIVE")
    assert len(state.amphora_ids) == 1
    assert all(x.provisioning_status.value == "ACTIVE" for x in state.members.values())
    seen = await get_names(f"http://127.77.0.10:{port}/", 20)
    assert seen == Counter({"b0": 10, "b1": 10})  # round robin through the VIP

    pool_id = next(iter(state.pools))
    new_member = b.member(state.pools[pool_id], backends[2].port)
    await repo.execute(lb_id, c.CreateChild(new_member), META)
    await wait_status(repo, lb_id, "ACTIVE")
    seen = await get_names(f"http://127.77.0.10:{port}/", 30)
    assert seen == Counter({"b0": 10, "b1": 10, "b2": 10})

    # A PING monitor runs the check script the agent reported; every member answers pings.
    monitor = b.healthmonitor(state.pools[pool_id], "PING", delay=1, timeout=1)
    await repo.execute(lb_id, c.CreateChild(monitor), META)
    await wait_status(repo, lb_id, "ACTIVE")
    await asyncio.sleep(2.5)  # two check intervals: a failing check would have taken them out
    seen = await get_names(f"http://127.77.0.10:{port}/", 30)
    assert seen == Counter({"b0": 10, "b1": 10, "b2": 10})

    await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
    await wait_status(repo, lb_id, "DELETED")
    assert await provisioner.driver.list() == []
    amp_status = await db.fetchval("SELECT status FROM amphora_view WHERE lb_id = $1", lb_id)
    assert amp_status == "DELETED"


async def test_a_config_haproxy_refuses_ends_in_error_with_the_reason(
    provisioner: RunningProvisioner, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    repo = LoadBalancerRepository(PostgresEventStore(db))
    port = free_port("127.77.0.11")
    # Port taken by another listener on the same address: HAProxy cannot bind it.
    blocker = await asyncio.start_server(lambda r, w: None, "127.77.0.11", port)
    try:
        command = http_lb("127.77.0.11", port, backends[:1])
        await repo.execute(command.loadbalancer.id, command, META)
        state = await wait_status(repo, command.loadbalancer.id, "ERROR")
    finally:
        blocker.close()
    assert (
        state.loadbalancer is not None and "create failed" in state.loadbalancer.provisioning_error
    )
    assert await provisioner.driver.list() == []  # nothing half-created remains


async def test_active_active_on_the_process_driver_ends_in_error_before_any_boot(
    provisioner: RunningProvisioner, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    """An API not told the driver accepts the topology; the provisioner refuses it."""
    repo = LoadBalancerRepository(PostgresEventStore(db))
    command = http_lb("127.77.0.12", free_port("127.77.0.12"), backends[:1])
    lb = command.loadbalancer.updated(
        {"topology": "ACTIVE_ACTIVE", "amphora_bounds": {"amphora_min": 2, "amphora_max": 2}}
    )
    command = c.CreateLoadBalancer(
        lb, listeners=command.listeners, pools=command.pools, members=command.members
    )
    await repo.execute(lb.id, command, META)
    state = await wait_status(repo, lb.id, "ERROR")
    assert state.loadbalancer is not None
    assert "cannot run the ACTIVE_ACTIVE topology" in state.loadbalancer.provisioning_error
    assert await provisioner.driver.list() == []
    assert state.amphora_ids == ()


async def test_provisioner_killed_mid_create_ends_active_with_one_amphora(
    pg_dsn: str, nats_url: str, tmp_path: Path, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    settings = provisioner_settings(pg_dsn, nats_url, tmp_path)
    env = {
        **os.environ,
        "FULCRUM_PROVISIONER_POSTGRES__DSN": pg_dsn,
        "FULCRUM_PROVISIONER_NATS__URL": nats_url,
        "FULCRUM_PROVISIONER_PORT": "0",
        "FULCRUM_PROVISIONER_STATE_DIR": str(settings.state_dir),
        "FULCRUM_PROVISIONER_CA_DIR": str(settings.ca_dir),
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "services.provisioner"], env=env)

    repo = LoadBalancerRepository(PostgresEventStore(db))
    port = free_port("127.77.0.12")
    command = http_lb("127.77.0.12", port, backends[:2])
    lb_id = command.loadbalancer.id
    first = start()
    try:
        await repo.execute(lb_id, command, META)
        # Kill it as soon as it has started the amphora, before it could record it done.
        for _ in range(600):
            if settings.state_dir.exists() and any(
                not d.name.startswith(".") for d in settings.state_dir.iterdir()
            ):
                break
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        lb = (await repo.load(lb_id)).loadbalancer
        assert lb is not None and lb.provisioning_status.value == "PENDING_CREATE"
        second = start()
        try:
            state = await wait_status(repo, lb_id, "ACTIVE", timeout=60)
            seen = await get_names(f"http://127.77.0.12:{port}/", 10)
            assert seen == Counter({"b0": 5, "b1": 5})
        finally:
            second.terminate()
            second.wait(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
    # The killed provisioner's zygote, if its successor did not stop it.
    for pid in _zygotes_of(settings.state_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    dirs = [d for d in settings.state_dir.iterdir() if (d / "agent.pid").exists()]
    assert len(dirs) == 1 and len(state.amphora_ids) == 1
    for d in dirs:  # the amphora outlives the control plane; the test removes it
        pid = int((d / "agent.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.05)


async def test_an_lb_whose_agent_died_is_deleted_with_its_haproxy(
    provisioner: RunningProvisioner, db: asyncpg.Pool, backends: list[Backend]
) -> None:
    """HAProxy runs in its own session: an agent killed alone leaves it serving the VIP. The
    driver's delete still stops it, so nothing answers on the VIP afterwards."""
    repo = LoadBalancerRepository(PostgresEventStore(db))
    vip = "127.77.0.12"
    port = free_port(vip)
    command = http_lb(vip, port, backends[:2])
    lb_id = command.loadbalancer.id
    await repo.execute(lb_id, command, META)
    (amphora_id,) = (await wait_status(repo, lb_id, "ACTIVE")).amphora_ids
    directory = provisioner.settings.state_dir / amphora_id
    haproxy_pid = int((directory / "haproxy.pid").read_text())
    os.kill(int((directory / "agent.pid").read_text()), signal.SIGKILL)
    try:
        assert sum((await get_names(f"http://{vip}:{port}/", 4)).values()) == 4  # still serves

        await repo.execute(lb_id, c.DeleteLoadBalancer(cascade=True), META)
        await wait_status(repo, lb_id, "DELETED")
        deadline = time.monotonic() + 10
        while not _ended(haproxy_pid):
            assert time.monotonic() < deadline, "the dead agent's HAProxy still runs"
            await asyncio.sleep(0.05)
        with contextlib.suppress(OSError), socket.create_connection((vip, port), timeout=1):
            raise AssertionError("something still answers on the deleted LB's VIP")
    finally:
        if not _ended(haproxy_pid):  # the test failed: do not leave it serving
            with contextlib.suppress(ProcessLookupError):
                os.killpg(haproxy_pid, signal.SIGKILL)


def _ended(pid: int) -> bool:
    """The process is gone, or a zombie (its parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _zygotes_of(state_dir: Path) -> list[int]:
    """Pids of the zygote processes started for ``state_dir`` (their pid file names them)."""
    pid_file = str(state_dir / ".zygote" / "zygote.pid").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if pid_file in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found
