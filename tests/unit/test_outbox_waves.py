"""The relay's waves: concurrency across event streams, id order within each."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from libs.common.outbox import waves


def _row(row_id: int, stream: str, event_type: str = "E") -> dict[str, Any]:
    return {"id": row_id, "subject": f"fulcrum.events.loadbalancer.{stream}.{event_type}"}


def test_first_row_of_every_stream_goes_first() -> None:
    rows = [_row(1, "a"), _row(2, "a", "F"), _row(3, "b"), _row(4, "a"), _row(5, "c")]
    assert [[r["id"] for r in wave] for wave in waves(rows)] == [[1, 3, 5], [2], [4]]


@given(st.lists(st.sampled_from("abcd"), max_size=40))
def test_each_stream_keeps_id_order_one_row_per_wave(streams: list[str]) -> None:
    rows = [_row(i, s) for i, s in enumerate(streams)]
    result = waves(rows)
    assert sorted(r["id"] for wave in result for r in wave) == list(range(len(rows)))
    for wave in result:
        assert [r["id"] for r in wave] == sorted(r["id"] for r in wave)
        assert len({r["subject"] for r in wave}) == len(wave)
    for s in set(streams):
        order = [r["id"] for wave in result for r in wave if r["subject"].split(".")[3] == s]
        assert order == sorted(order)
