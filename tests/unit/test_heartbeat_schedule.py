"""The sender's schedule: one beat at start, then one per interval, and one at once when HAProxy
loads a config (``beat_now``). Real UDP datagrams on loopback; HAProxy's stats are a list."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Iterator

import pytest

from libs.common import heartbeat_codec as codec
from libs.common.metrics import Metrics
from services.amphora.heartbeat import BeatTicks, HeartbeatConfig, HeartbeatSender, beat_ticks

KEY = b"schedule-key"


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


async def next_datagram(sock: socket.socket, within: float) -> float:
    """Seconds until the next valid heartbeat arrives on ``sock`` (fails after ``within``)."""
    started = time.monotonic()
    datagram = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 65536), within)
    codec.decode(datagram, KEY)
    return time.monotonic() - started


async def test_a_loaded_config_is_reported_at_once_not_an_interval_later(
    receiver: socket.socket,
) -> None:
    async def no_stats() -> list[dict[str, str | int | None]]:
        return []

    config = HeartbeatConfig(
        amphora_id="amp-1",
        key=KEY,
        endpoints=(receiver.getsockname(),),
        interval=30.0,
    )
    metrics = Metrics("fulcrum_agent")
    sender = HeartbeatSender(config, no_stats, metrics=metrics)
    task = asyncio.create_task(sender.run())
    try:
        assert await next_datagram(receiver, 5) < 5  # the first beat goes at start
        sender.beat_now()
        assert await next_datagram(receiver, 5) < 5  # not 30 s later
        with pytest.raises(TimeoutError):
            await next_datagram(receiver, 0.5)  # and then the schedule resumes, no burst
        assert sender.sent == 2
        assert metrics.value("heartbeats_sent_total") == 2
        assert metrics.value("heartbeats_unsent_total") == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_beat_ticks_are_the_phase_plus_whole_intervals() -> None:
    ticks = BeatTicks(phase=10.0, interval=2.0)
    assert ticks.after(10.0) == 12.0
    assert ticks.after(11.9) == 12.0
    assert ticks.after(12.0) == 14.0  # strictly later: never the same tick twice
    assert ticks.after(17.5) == 18.0  # after a stall: the next tick, no catching up
    assert ticks.after(9.0) == 10.0


async def test_senders_of_one_loop_share_its_ticks_and_each_beats_within_an_interval(
    receiver: socket.socket,
) -> None:
    """An agent host's amphorae beat in one wake-up: a sender that starts out of step beats
    at once, then on the loop's ticks, never more than an interval after its previous beat."""

    async def no_stats() -> list[dict[str, str | int | None]]:
        return []

    interval = 0.3
    loop = asyncio.get_running_loop()
    assert beat_ticks(loop, interval) == beat_ticks(loop, interval)
    senders = [
        HeartbeatSender(
            HeartbeatConfig(f"amp-{i}", KEY, (receiver.getsockname(),), interval), no_stats
        )
        for i in range(2)
    ]
    arrivals: dict[str, list[float]] = {"amp-0": [], "amp-1": []}
    tasks = [asyncio.create_task(senders[0].run())]
    try:
        await asyncio.sleep(interval / 3)
        tasks.append(asyncio.create_task(senders[1].run()))
        deadline = loop.time() + 4 * interval
        while (left := deadline - loop.time()) > 0:
            try:
                datagram = await asyncio.wait_for(loop.sock_recv(receiver, 65536), left)
            except TimeoutError:
                break
            arrivals[codec.decode(datagram, KEY).id].append(loop.time())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    late, early = arrivals["amp-1"], arrivals["amp-0"]
    assert len(late) >= 4 and len(early) >= 4
    for beats in (early, late):
        assert max(b - a for a, b in itertools.pairwise(beats)) < interval * 1.3
    for at in late[1:]:  # after its own first beat, in step with the other
        assert min(abs(at - other) for other in early) < interval / 6
