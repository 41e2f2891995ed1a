"""The health writer's counter batches (pure): deltas add up per key, active connections keep
the latest, a member behind several backends of one heartbeat counts their sum, and a batch
whose write failed folds back under the newer one."""

from __future__ import annotations

from libs.common.heartbeat_codec import Heartbeat
from services.health.handlers.writer import Deltas, HealthWriter

POOL, L1, L2 = "pool-1", "listener-1", "listener-2"


def heartbeat(seq: int, **member_stats: dict[str, int]) -> Heartbeat:
    return Heartbeat.model_validate(
        {
            "id": "amp-1",
            "seq": seq,
            "ver": 3,
            "pools": {
                f"{POOL}:{listener}": {"status": "UP", "member_stats": {"m1": stats}}
                for listener, stats in member_stats.items()
            },
        }
    )


def test_deltas_add_up_and_connections_keep_the_latest() -> None:
    batch = Deltas()
    batch.add(("m1", "amp-1"), ("pool-1", "lb-1"), [10, 20, 3, 4, 1])
    batch.add(("m1", "amp-1"), ("pool-1", "lb-1"), [1, 2, 0, 1, 0])
    assert batch.counters == {("m1", "amp-1"): [11, 22, 0, 5, 1]}
    assert batch.owners == {("m1", "amp-1"): ("pool-1", "lb-1")}


def test_an_older_batch_folds_back_without_its_connections() -> None:
    newer, older = Deltas(), Deltas()
    older.add(("m1", "a"), ("p", "lb"), [5, 5, 9, 5, 5])
    older.add(("m2", "a"), ("p", "lb"), [1, 1, 1, 1, 1])
    newer.add(("m1", "a"), ("p", "lb"), [1, 1, 2, 1, 1])
    newer.merge_older(older)
    assert newer.counters == {("m1", "a"): [6, 6, 2, 6, 6], ("m2", "a"): [1, 1, 1, 1, 1]}


def test_a_member_behind_two_backends_counts_both() -> None:
    writer = HealthWriter(pool=None, metrics=None, flush_interval=1.0)  # type: ignore[arg-type]
    one = {"rx": 1, "tx": 2, "conns": 3, "totconns": 4, "ereq": 0}
    two = {"rx": 10, "tx": 20, "conns": 30, "totconns": 40, "ereq": 1}
    writer.add_stats("lb-1", "amp-1", heartbeat(1, **{L1: one, L2: two}))
    writer.add_stats("lb-1", "amp-1", heartbeat(2, **{L1: one}))
    batch = writer._member_stats
    assert batch.counters == {("m1", "amp-1"): [12, 24, 3, 48, 1]}
    assert batch.owners == {("m1", "amp-1"): (POOL, "lb-1")}
