"""What keeps an idle fleet's heartbeats cheap for the health service (pure, and a loopback
UDP socket): stats rows are rewritten only when they change, and the receiver reads a burst of
datagrams in one wake-up. Its settings refuse a gathering longer than a scan period."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from pydantic import ValidationError

from libs.common.errors import ConfigurationError
from services.health.app import check_settings
from services.health.handlers import receiver as receiver_module
from services.health.handlers.receiver import HeartbeatIntake, UdpReceiver
from services.health.handlers.writer import Deltas
from services.health.settings import HealthSettings

KEY = ("listener-1", "amp-1")
OWNERS = ("lb-1",)


def batch(counters: list[int]) -> Deltas:
    deltas = Deltas()
    deltas.add(KEY, OWNERS, counters)
    return deltas


def test_a_row_is_written_once_then_only_when_it_changes() -> None:
    written: dict[tuple[str, str], int] = {}
    assert batch([0, 0, 0, 0, 0]).changing(written).counters == {KEY: [0, 0, 0, 0, 0]}
    written[KEY] = 0
    assert batch([0, 0, 0, 0, 0]).changing(written).counters == {}
    assert batch([0, 0, 2, 0, 0]).changing(written).counters == {KEY: [0, 0, 2, 0, 0]}
    written[KEY] = 2
    assert batch([0, 0, 2, 0, 0]).changing(written).counters == {}
    for traffic in ([5, 0, 2, 0, 0], [0, 7, 2, 0, 0], [0, 0, 2, 1, 0], [0, 0, 2, 0, 1]):
        changed = batch(traffic).changing(written)
        assert changed.counters == {KEY: traffic}
        assert changed.owners == {KEY: OWNERS}


class Recording:
    """Stands in for the intake: records when each datagram was handled."""

    def __init__(self) -> None:
        self.handled: list[tuple[bytes, float]] = []

    def handle(self, datagram: bytes) -> None:
        self.handled.append((datagram, time.monotonic()))


async def _receive(gather: float, count: int) -> tuple[UdpReceiver, Recording, float]:
    """Send ``count`` datagrams to a receiver with ``gather``, one every ms; returns once all
    were handled (within 5 s), with when the first was sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    recording = Recording()
    intake: HeartbeatIntake = recording  # type: ignore[assignment]
    receiver = UdpReceiver(sock, intake, 2048, gather=gather)
    receiver.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        first = time.monotonic()
        for n in range(count):
            sender.sendto(b"%d" % n, sock.getsockname())
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + 5
        while len(recording.handled) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        sender.close()
        receiver.close()
    return receiver, recording, first


async def test_a_burst_is_read_in_a_few_wakeups_and_none_is_lost() -> None:
    receiver, recording, first = await _receive(gather=0.05, count=40)
    assert [d for d, _ in recording.handled] == [b"%d" % n for n in range(40)]
    # 40 datagrams over ~40-80 ms: one batch per 50 ms, not one per datagram.
    assert receiver.wakeups <= 4, receiver.wakeups
    assert recording.handled[0][1] - first >= 0.04  # the first waited for the others


async def test_without_gathering_each_datagram_is_read_when_ready() -> None:
    receiver, recording, first = await _receive(gather=0.0, count=10)
    assert len(recording.handled) == 10
    assert receiver.wakeups >= 5
    assert recording.handled[0][1] - first < 0.04


async def test_a_full_batch_is_followed_at_once_by_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(receiver_module, "_BATCH", 100)  # the socket's buffer holds ~250
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    recording = Recording()
    intake: HeartbeatIntake = recording  # type: ignore[assignment]
    receiver = UdpReceiver(sock, intake, 2048, gather=0.02)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for n in range(250):  # more than two batches, sent before the loop reads any
            sender.sendto(b"%d" % n, sock.getsockname())
        receiver.start()
        deadline = time.monotonic() + 5
        while len(recording.handled) < 250 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        assert len(recording.handled) == 250
        assert recording.handled[-1][1] - recording.handled[0][1] < 0.02  # no gather between
        assert receiver.wakeups == 3
    finally:
        sender.close()
        receiver.close()


def test_receive_gather_must_be_shorter_than_the_scan_period() -> None:
    settings = HealthSettings(heartbeat_key="k", health_check_interval=0.25, receive_gather=0.25)
    with pytest.raises(ConfigurationError, match="receive_gather .* must be shorter than"):
        check_settings(settings)
    check_settings(settings.model_copy(update={"receive_gather": 0.0}))
    with pytest.raises(ValidationError, match="receive_gather"):
        HealthSettings(heartbeat_key="k", receive_gather=-0.1)
