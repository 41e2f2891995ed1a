"""Fixtures of the cluster tests: a real 3-node JetStream cluster (child processes, killed
and restarted by the tests), services run as real processes (``python -m services.<x>``), and
what provisioner processes need (their environment, a shared amphora directory cleaned up at
the end, LB creates)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from deploy.local.embedded import _parent_death_signal
from deploy.local.nats_auth import NatsTls
from deploy.local.nats_cluster import NatsCluster, RunningNatsCluster
from deploy.local.ports import free_tcp_port
from libs.common.domain import commands as c
from tests import builders as b
from tests.integration.housekeeping.conftest import kill_amphorae

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[RunningNatsCluster]:
    """Three ``nats-server`` nodes with TLS routes, TLS clients and per-service users with
    their permissions, healthy; stopped (by pid) at the end, also on failure."""
    tls = NatsTls.from_deployment_ca(tmp_path / "ca", tmp_path / "nats-tls", "127.0.0.1")
    cluster = NatsCluster(tmp_path / "nats-cluster", size=3, tls=tls)
    with cluster.run(start_timeout=30.0) as running:
        yield running


@dataclass
class ServiceProcess:
    """One ``python -m services.<service>`` child process, its own session, its log in a file;
    ``port`` is its HTTP port (``/readyz``, ``/metrics``)."""

    service: str
    environment: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "FULCRUM_"))}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.service}"],
                env=env | self.environment,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_signal(signal.SIGKILL),
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200; AssertionError with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.service} exited:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as answer:
                        if answer.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.service} not ready:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def metric(self, name: str) -> float:
        """A value of ``/metrics`` (the line ``fulcrum_<service>_<name> <value>``)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session,
            session.get(url) as answer,
        ):
            text = await answer.text()
        wanted = f"fulcrum_{self.service}_{name}"
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == wanted:
                return float(parts[1])
        raise AssertionError(f"no metric {wanted}")

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 20.0) -> None:
        """Send ``sig`` by pid and wait for the exit (SIGKILL after ``timeout``)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def service_processes(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Starts service processes (``start(service, environment, port)``); every one still
    running is stopped (SIGTERM, then SIGKILL) at the end, also on failure."""
    started: list[ServiceProcess] = []

    def start(service: str, environment: dict[str, str], port: int) -> ServiceProcess:
        log_path = tmp_path / f"{service}-{len(started)}.log"
        process = ServiceProcess(service, environment, port, log_path)
        started.append(process)
        process.start()
        return process

    try:
        yield start
    finally:
        for process in started:
            process.kill(signal.SIGTERM)


@pytest.fixture
def amphora_dir(tmp_path: Path) -> Iterator[Path]:
    """The replicas' shared amphora state directory; every agent, HAProxy and zygote started
    under it is killed at the end."""
    directory = tmp_path / "amphorae"
    try:
        yield directory
    finally:
        kill_amphorae(directory)


def provisioner_environment(
    pg_dsn: str, nats_url: str, port: int, state: Path, amphorae: Path
) -> dict[str, str]:
    settings = {
        "POSTGRES__DSN": pg_dsn,
        "NATS__URL": nats_url,
        # A message the killed replica held is redelivered after this long.
        "NATS__ACK_WAIT": "4",
        "RELAY__POLL_INTERVAL": "0.5",
        "PORT": str(port),
        "STATE_DIR": str(amphorae),
        "CA_DIR": str(state / "ca"),
    }
    return {f"FULCRUM_PROVISIONER_{k}": v for k, v in settings.items()}


def lb_create(index: int) -> c.CreateLoadBalancer:
    lb = b.loadbalancer(f"127.77.90.{10 + index}")
    pool = b.pool(lb)
    listener = b.listener(lb, free_tcp_port(), default_pool_id=pool.id)
    members = (b.member(pool, free_tcp_port()),)
    return c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)


async def active_count(db: asyncpg.Pool, lb_ids: list[str]) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM loadbalancer_view WHERE id = ANY($1::text[]) "
        "AND body->>'provisioning_status' = 'ACTIVE'",
        lb_ids,
    )
    return count
