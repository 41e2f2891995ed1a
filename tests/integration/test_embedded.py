"""The embedded Postgres and NATS launchers start real servers, restart them, and fail loudly."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest

from deploy.local.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    EmbeddedServerError,
    create_database,
    drop_database,
)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_is_open(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1.0):
            return True
    except ConnectionRefusedError:
        return False


async def test_pg_dsn_is_a_fresh_database_that_answers_queries(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        name = await conn.fetchval("SELECT current_database()")
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        await conn.execute("CREATE TABLE probe (id int PRIMARY KEY, note text)")
        await conn.executemany("INSERT INTO probe VALUES ($1, $2)", [(i, "x") for i in range(50)])
        count = await conn.fetchval("SELECT count(*) FROM probe")
    finally:
        await conn.close()
    assert name == urlsplit(pg_dsn).path.lstrip("/")
    assert name.startswith("t_")
    assert tables == 0
    assert count == 50


async def test_drop_database_disconnects_sessions_and_removes_it(pg_server_dsn: str) -> None:
    dsn = await create_database(pg_server_dsn, "t_embedded_drop")
    lingering = await asyncpg.connect(dsn)
    try:
        await drop_database(pg_server_dsn, "t_embedded_drop")
        with pytest.raises(asyncpg.InvalidCatalogNameError):
            await asyncpg.connect(dsn)
    finally:
        await lingering.close()
    await drop_database(pg_server_dsn, "t_embedded_drop")  # already gone: no error


async def test_create_database_refuses_names_that_are_not_identifiers(pg_server_dsn: str) -> None:
    with pytest.raises(ValueError, match="not a lowercase identifier"):
        await create_database(pg_server_dsn, 'x"; DROP DATABASE postgres; --')


async def test_postgres_restarts_on_the_same_port_with_its_data(tmp_path: Path) -> None:
    cache = tmp_path / "templates"
    first = EmbeddedPostgres(tmp_path / "first", template_cache=cache)
    try:
        dsn = first.start()
        pid = first.pid
        assert pid is not None
        conn = await asyncpg.connect(dsn)
        await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        await conn.close()

        first.stop()
        assert first.pid is None
        assert not _process_exists(pid)
        assert not _port_is_open(dsn)

        assert first.start() == dsn
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "still here"
        finally:
            await conn.close()
    finally:
        first.stop()

    second = EmbeddedPostgres(tmp_path / "second", template_cache=cache)
    try:
        conn = await asyncpg.connect(second.start())
        try:
            assert await conn.fetchval("SELECT to_regclass('kept')") is None
        finally:
            await conn.close()
    finally:
        second.stop()
    assert len(list(cache.iterdir())) == 1, "the second cluster reused the cached template"


async def test_nats_url_serves_jetstream(nats_url: str) -> None:
    nc = await nats.connect(nats_url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="PROBE", subjects=["probe.>"])
        ack = await js.publish("probe.one", b"hello")
        info = await js.stream_info("PROBE")
    finally:
        await nc.close()
    assert ack.stream == "PROBE"
    assert ack.seq == 1
    assert info.state.messages == 1


async def test_session_nats_server_serves_jetstream(nats_server: str) -> None:
    nc = await nats.connect(nats_server, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="SESSION_PROBE", subjects=["session-probe.>"])
        ack = await js.publish("session-probe.one", b"hello")
        await js.delete_stream("SESSION_PROBE")
    finally:
        await nc.close()
    assert ack.seq == 1


async def test_nats_restart_on_the_same_url_keeps_jetstream_data(
    nats_factory: EmbeddedNats,
) -> None:
    url = nats_factory.start()
    pid = nats_factory.pid
    assert pid is not None
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        for i in range(3):
            await js.publish(f"kept.{i}", b"payload")
    finally:
        await nc.close()

    nats_factory.stop()
    assert nats_factory.pid is None
    assert not _process_exists(pid)
    assert not _port_is_open(url)

    assert nats_factory.start() == url
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        info = await nc.jetstream().stream_info("KEPT")
    finally:
        await nc.close()
    assert info.state.messages == 3


def test_missing_nats_binary_fails_loudly(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path, binary=tmp_path / "no-such-nats-server")
    with pytest.raises(EmbeddedServerError, match="binary not found"):
        server.start()
    assert server.pid is None


def test_missing_postgres_binaries_fail_loudly(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path, bin_dir=tmp_path / "no-such-bin")
    with pytest.raises(EmbeddedServerError, match="no postgres/initdb binaries"):
        server.start()
    assert server.pid is None


def test_nats_that_cannot_bind_fails_with_its_log_tail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedNats(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(EmbeddedServerError, match="exited") as failure:
            server.start()
    assert "address already in use" in failure.value.log_tail
    assert "log tail" in str(failure.value)
    assert server.pid is None


def test_postgres_that_cannot_bind_fails_with_its_log_tail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedPostgres(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(EmbeddedServerError, match="exited") as failure:
            server.start()
    assert "Address already in use" in failure.value.log_tail
    assert server.pid is None
