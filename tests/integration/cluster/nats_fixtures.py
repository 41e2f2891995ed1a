"""Fixtures of the cluster tests that need NATS: a real 3-node JetStream cluster (child
processes, killed and restarted by the tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.nats_cluster import NatsCluster, RunningNatsCluster


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[RunningNatsCluster]:
    """Three ``nats-server`` nodes with routes and per-service users, healthy; stopped (by pid)
    at the end, also on failure."""
    with NatsCluster(tmp_path / "nats-cluster", size=3).run(start_timeout=30.0) as running:
        yield running
