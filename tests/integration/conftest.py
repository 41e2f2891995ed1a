"""Integration fixtures built on the real servers of tests/conftest.py: an upgraded database
pool, a JetStream with the FULCRUM_EVENTS stream, and the agent's HAProxy data plane with a
one-request client for what it serves."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from libs.common import bus
from libs.common.database import create_pool
from libs.common.schema import upgrade
from libs.common.settings import NatsSettings, PostgresSettings
from services.amphora.adapters.daemon_process import pid_alive
from services.amphora.adapters.haproxy import HaproxyDataPlane


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh, migrated database."""
    pool = await create_pool(PostgresSettings(dsn=pg_dsn, max_pool=20))
    await upgrade(pool)
    try:
        yield pool
    finally:
        await pool.close()


@dataclass
class Jet:
    nc: NatsClient
    js: JetStreamContext
    settings: NatsSettings


@pytest.fixture
async def jet(nats_url: str) -> AsyncIterator[Jet]:
    """A connection to a fresh NATS whose FULCRUM_EVENTS stream exists."""
    settings = NatsSettings(url=nats_url, ack_wait=5.0, max_deliver=3)
    nc = await bus.connect(settings, "test")
    js = nc.jetstream()
    await bus.ensure_stream(js, settings)
    try:
        yield Jet(nc, js, settings)
    finally:
        await nc.close()


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[HaproxyDataPlane]:
    """The agent's HAProxy data plane in ``tmp_path``, prepared (no config yet), stopped
    after the test."""
    dataplane = HaproxyDataPlane(
        Path("/usr/sbin/haproxy"), tmp_path / "amp", reload_timeout=10, drain_timeout=1
    )
    await dataplane.prepare()
    try:
        yield dataplane
    finally:
        await dataplane.stop()


async def gone_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` is gone (or a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def answer_once(port: int) -> str:
    """The body of one HTTP/1.0 GET to 127.0.0.1:``port``, no retry (refused if nothing
    listens)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        return (await asyncio.wait_for(reader.read(), 5)).decode().rsplit("\r\n", 1)[-1]
    finally:
        writer.close()
