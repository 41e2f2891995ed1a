"""Fixtures that run real servers: Postgres and NATS JetStream as child processes, never fakes.

Session: `pg_server_dsn` (one Postgres, or FULCRUM_TEST_PG_DSN) and `nats_server` (one NATS, or
FULCRUM_TEST_NATS_URL). Per test: `pg_dsn` (a fresh database), `nats_url` (a fresh server and
JetStream store) and `nats_factory` (an unstarted EmbeddedNats the test starts and stops).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from deploy.local.embedded import (
    UNSAFE_FAST_SETTINGS,
    EmbeddedNats,
    EmbeddedPostgres,
    create_database,
    drop_database,
)

PG_DSN_ENV = "FULCRUM_TEST_PG_DSN"
NATS_URL_ENV = "FULCRUM_TEST_NATS_URL"


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """Superuser DSN of the session's Postgres: FULCRUM_TEST_PG_DSN, else an embedded server.

    Tests should not write to it directly; use `pg_dsn` for an isolated database.
    """
    external = os.environ.get(PG_DSN_ENV)
    if external:
        yield external
        return
    # Not under pytest's basetemp: its retention would keep a 40 MB data dir per run.
    state_dir = Path(tempfile.mkdtemp(prefix="fulcrum-test-pg-"))
    # Throwaway data: durability traded for speed (the stack's Postgres keeps fsync on).
    server = EmbeddedPostgres(state_dir, settings=UNSAFE_FAST_SETTINGS)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
async def pg_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """DSN of a new empty database `t_<hex>`, dropped WITH (FORCE) after the test."""
    name = f"t_{uuid.uuid4().hex}"
    dsn = await create_database(pg_server_dsn, name)
    try:
        yield dsn
    finally:
        await drop_database(pg_server_dsn, name)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's NATS with JetStream: FULCRUM_TEST_NATS_URL, else embedded.

    Shared by every test that asks for it, so streams and consumers need unique names.
    """
    external = os.environ.get(NATS_URL_ENV)
    if external:
        yield external
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats-session"))
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """URL of a NATS server started for this test alone, with an empty JetStream store.

    Always embedded (it starts in ~15 ms), even when FULCRUM_TEST_NATS_URL is set.
    """
    server = EmbeddedNats(tmp_path / "nats")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def nats_factory(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """An EmbeddedNats in this test's tmp dir, not started; stopped after the test.

    `start()` returns the URL; after `stop()`, `start()` again serves the same URL and store.
    """
    server = EmbeddedNats(tmp_path / "nats-factory")
    try:
        yield server
    finally:
        server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist (`make test` runs ``-n 2 --dist loadgroup``): every test of a
    module runs on one worker, so module fixtures (a whole ``fulcrum up``) start once; the
    docker tests share one worker (they share the checkout's private engine), and so do the
    netns tests (their labs pick free /24s without a lock)."""
    for item in items:
        if item.get_closest_marker("docker"):
            group = "docker"
        elif item.get_closest_marker("netns"):
            group = "netns"
        else:
            group = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
