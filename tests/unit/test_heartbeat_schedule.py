"""The sender's schedule: one beat at start, then one per interval, and one at once when HAProxy
loads a config (``beat_now``). Real UDP datagrams on loopback; HAProxy's stats are a list."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from libs.common import heartbeat_codec as codec
from libs.common.metrics import Metrics
from services.amphora.heartbeat import HeartbeatConfig, HeartbeatSender

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
