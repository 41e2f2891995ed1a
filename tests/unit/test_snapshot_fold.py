"""Snapshots of the LoadBalancer aggregate: a snapshot taken anywhere in a random stream, plus
the events after it, folds to exactly the state of the whole stream (same JSON, map order
included); a snapshot of another shape is not used."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant

from libs.common.domain import commands as c
from libs.common.domain.decide import decide
from libs.common.domain.evolve import fold
from libs.common.domain.model import LoadBalancerState
from libs.common.events import Event
from libs.common.eventstore import StoredSnapshot
from libs.common.repository import SNAPSHOT_SCHEMA_VERSION, snapshot_of, state_of
from tests import builders
from tests.unit.test_domain_properties import LoadBalancerMachine

STREAM = "loadbalancer-x"


class SnapshotMachine(LoadBalancerMachine):
    """The aggregate machine, keeping its events and a snapshot after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []
        self.snapshots: list[StoredSnapshot] = [snapshot_of(STREAM, self.state)]

    def run(self, command: c.Command) -> bool:
        before = self.state
        applied = super().run(command)
        if applied:
            self.events.extend(decide(command, before))
            self.snapshots.append(snapshot_of(STREAM, self.state))
        return applied

    @invariant()
    def a_snapshot_plus_its_tail_is_the_whole_fold(self) -> None:
        whole = fold(self.events)
        assert whole.model_dump_json() == self.state.model_dump_json()
        for snapshot in self.snapshots[:: max(1, len(self.snapshots) // 4)] + self.snapshots[-1:]:
            base = state_of(snapshot)
            assert base is not None
            assert base.version == snapshot.stream_version
            resumed = fold(self.events[base.version :], base)
            assert resumed == whole
            assert resumed.model_dump_json() == whole.model_dump_json()


SnapshotMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSnapshotMachine = SnapshotMachine.TestCase


def folded() -> LoadBalancerState:
    lb = builders.loadbalancer("127.77.0.10")
    return fold(decide(c.CreateLoadBalancer(loadbalancer=lb), LoadBalancerState()))


def test_a_snapshot_of_another_shape_is_ignored() -> None:
    state = folded()
    good = snapshot_of(STREAM, state)
    assert state_of(good) == state
    for stale in (
        StoredSnapshot(STREAM, good.stream_version, SNAPSHOT_SCHEMA_VERSION + 1, good.state),
        StoredSnapshot(STREAM, good.stream_version, SNAPSHOT_SCHEMA_VERSION - 1, good.state),
        StoredSnapshot(STREAM, good.stream_version, SNAPSHOT_SCHEMA_VERSION, '{"listeners": 3}'),
        StoredSnapshot(STREAM, good.stream_version + 1, SNAPSHOT_SCHEMA_VERSION, good.state),
    ):
        assert state_of(stale) is None
    assert state_of(None) is None
