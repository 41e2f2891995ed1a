"""Fixtures of the cluster tests: a Patroni-managed Postgres (etcd + 2 members) and a NATS
of the test's own, both real processes on 127.0.0.1, stopped also when the test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.embedded import EmbeddedNats
from deploy.local.patroni import PatroniCluster

PATRONI_START_TIMEOUT = 60.0


@pytest.fixture
def patroni_cluster(tmp_path: Path) -> Iterator[PatroniCluster]:
    """etcd and two Patroni members, ready: a primary, a streaming synchronous standby and the
    ``fulcrum`` database (connect with ``cluster.dsn``). Started from the test's main thread,
    so the children's parent-death signal fires only when the test process dies."""
    cluster = PatroniCluster(tmp_path / "patroni")
    cluster.start(timeout=PATRONI_START_TIMEOUT)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A ``nats-server -js`` of the test's own."""
    with EmbeddedNats(tmp_path / "nats") as server:
        yield server
