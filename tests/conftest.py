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
from typing import Any, Final

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


# Tests kept on one worker, one at a time: those of the checkout's private docker engine (with
# its fixed network names), and the netns tests. A netns lab reserves its /24 (tests/integration/
# netns/lab.py), so two labs could run at once, as tests/e2e/test_cluster.py's does beside them;
# the netns tests stay together so that no two of their modules, each running real HAProxy and
# keepalived pairs whose failover times it bounds, load the box at once. Every test marked
# `docker` or `netns` must live under one of these paths.
_SHARED_RESOURCES: Final = {
    "docker": ("tests/integration/docker/", "tests/e2e/test_compose.py"),
    "netns": ("tests/integration/netns/",),
}


def shared_resource(nodeid: str) -> str | None:
    """The shared resource the test ``nodeid`` uses (a key of ``_SHARED_RESOURCES``), if any."""
    for resource, paths in _SHARED_RESOURCES.items():
        if nodeid.startswith(paths):
            return resource
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked ``docker`` or ``netns`` outside its resource's paths is an error: it would
    run beside the others on another xdist worker."""
    for item in items:
        for resource in _SHARED_RESOURCES:
            if item.get_closest_marker(resource) and shared_resource(item.nodeid) != resource:
                paths = _SHARED_RESOURCES[resource]
                raise pytest.UsageError(
                    f"{item.nodeid} is marked {resource}: move it under {paths} (tests/conftest.py)"
                )


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadscope`` (`make test`: ``-n 2 --dist loadscope``), a scope is a test
    module, so its module fixtures (a whole ``fulcrum up``) start once, except that every test
    of one shared resource (``_SHARED_RESOURCES``) is one scope, run on one worker."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedResourceScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return shared_resource(nodeid) or nodeid.split("::", 1)[0]

    return SharedResourceScheduling(config, log)
