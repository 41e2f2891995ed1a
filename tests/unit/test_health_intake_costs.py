"""What keeps an idle fleet's heartbeats cheap for the health service (pure, and a loopback
UDP socket): stats rows are rewritten only when they change, an idle listener's beat adds
nothing to write, a message that repeats its sender's previous one but for ``seq`` is not
parsed again, and the receiver reads a burst of datagrams in one wake-up. Its settings refuse
a gathering longer than a scan period."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import zlib

import pytest
from pydantic import ValidationError

from libs.common import heartbeat_codec as codec
from libs.common.errors import ConfigurationError
from services.health.app import check_settings
from services.health.handlers import receiver as receiver_module
from services.health.handlers.directory import AmphoraDirectory
from services.health.handlers.receiver import HeartbeatIntake, UdpReceiver
from services.health.handlers.writer import Deltas, HealthWriter
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


LISTENER = "11111111-2222-3333-4444-555555555555"


def _message(seq: int, conns: int = 0, rx: int = 0, amphora_id: str = "amp-1") -> dict[str, object]:
    stats = {"rx": rx, "tx": 0, "conns": conns, "totconns": 0, "ereq": 0}
    return {
        "id": amphora_id,
        "seq": seq,
        "ver": 3,
        "listeners": {LISTENER: {"status": "OPEN", "stats": stats}},
        "pools": {f"pool-1:{LISTENER}": {"status": "UP", "members": {"m-1": "UP"}}},
    }


def _as_parsed(beat: codec.Beat) -> codec.Heartbeat:
    """The heartbeat a parse of the beat's message gives."""
    return beat.heartbeat.model_copy(update={"seq": beat.seq, "cpu": beat.cpu})


def test_a_repeated_message_decodes_as_a_fresh_parse_would() -> None:
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    first = decoder.decode(codec.encode(_message(1), b"k"))
    for seq in (1234567, 1234568, 99999999):
        again = decoder.decode(codec.encode(_message(seq), b"k"))
        assert again.content is not None and again.content == first.content
        assert again.heartbeat is first.heartbeat and again.seq == seq
        assert _as_parsed(again) == codec.decode(codec.encode(_message(seq), b"k"), b"k")
    changed = decoder.decode(codec.encode(_message(1234569, conns=3), b"k"))
    assert changed.content != first.content
    assert changed.heartbeat.listeners[LISTENER].stats.conns == 3
    assert changed.seq == changed.heartbeat.seq == 1234569
    other = decoder.decode(codec.encode(_message(5, amphora_id="amp-2"), b"k"))
    assert other.heartbeat.id == "amp-2" and other.content == first.content  # parsed


def test_a_repeat_with_another_cpu_figure_is_not_parsed_again_but_carries_it() -> None:
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    first = decoder.decode(codec.encode(_message(1) | {"cpu": 0.0002}, b"k"))
    for seq, cpu in ((2, 1e-05), (3, 0), (4, 1.5), (5, 0.0002), (6, 12)):
        datagram = codec.encode(_message(seq) | {"cpu": cpu}, b"k")
        again = decoder.decode(datagram)
        assert again.content == first.content and (again.seq, again.cpu) == (seq, cpu)
        assert again.heartbeat is first.heartbeat
        assert _as_parsed(again) == codec.decode(datagram, b"k")
    without = decoder.decode(codec.encode(_message(7), b"k"))
    assert without.content == first.content and without.cpu is None
    assert first.cpu == first.heartbeat.cpu == 0.0002


def test_a_sealed_repeat_is_not_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a sender repeated a message, its next repeats are read without zlib: their stored
    head and the deflate blocks known from the last one give the text inflating would."""
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    decoder.decode(codec.encode(_message(1) | {"cpu": 0.5}, b"k"))
    decoder.decode(codec.encode(_message(2) | {"cpu": 0.5}, b"k"))  # the repeat shows them

    def refused(body: bytes, max_message: int) -> bytes:
        raise AssertionError("inflated")

    datagrams = [
        codec.encode(_message(seq) | extra, b"k")
        for seq, extra in ((3, {"cpu": 0.25}), (4, {}), (10**12, {"cpu": 3e-05}))
    ]
    parsed = [codec.decode(datagram, b"k") for datagram in datagrams]
    with monkeypatch.context() as patched:
        patched.setattr(codec, "inflate", refused)
        assert [_as_parsed(decoder.decode(d)) for d in datagrams] == parsed
    with monkeypatch.context() as patched:
        patched.setattr(codec, "inflate", refused)
        with pytest.raises(AssertionError, match="inflated"):  # changed: inflated and parsed
            decoder.decode(codec.encode(_message(5, conns=1), b"k"))


def _signed(body: bytes) -> bytes:
    return body + codec.sign(body, b"k")


def test_a_sealed_repeat_with_a_wrong_checksum_is_still_garbled() -> None:
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    for seq in (1, 2, 3):
        decoder.decode(codec.encode(_message(seq), b"k"))
    body = codec.encode(_message(4), b"k")[:-64]
    with pytest.raises(codec.Garbled, match="not zlib"):
        decoder.decode(_signed(body[:-4] + bytes(b ^ 1 for b in body[-4:])))
    assert decoder.decode(_signed(body)).seq == 4


@pytest.mark.parametrize("body", [b"\x78\xda\x00", b"\x78\xda\x00\x05\x00\xfa"])
def test_a_stream_cut_in_its_stored_block_header_is_garbled(body: bytes) -> None:
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    with pytest.raises(codec.Garbled):
        decoder.decode(_signed(body))


def test_deflate_blocks_that_reach_into_the_stored_head_are_inflated_each_time() -> None:
    """A sender whose compressed rest refers back into the stored head (here: a dictionary of
    the head) is read by inflating every datagram: its rest depends on the head before it."""
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    for seq in (7, 8, 9, 10, 11):
        head = b'{"id":"amp-1","seq":%d' % seq
        tail = (
            b',"ver":3,"listeners":{},"pools":{},"note":"{\\"id\\":\\"amp-1\\",\\"seq\\":%d"}' % seq
        )
        deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=head)
        stored = struct.pack("<BHH", 0, len(head), len(head) ^ 0xFFFF) + head
        checksum = struct.pack(">I", zlib.adler32(tail, zlib.adler32(head)))
        body = b"\x78\xda" + stored + deflater.compress(tail) + deflater.flush() + checksum
        beat = decoder.decode(_signed(body))
        assert beat.seq == seq and zlib.decompress(body) == head + tail
        assert decoder._last[b"amp-1"].deflated is None


def test_a_repeat_is_the_heartbeat_a_parse_gives() -> None:
    """A repeat carries the first heartbeat of its content, a frozen model, and its own seq
    and cpu: together, what a parse of its message gives."""
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    for seq, extra in ((1, {}), (2, {"cpu": 0.5}), (3, {"cpu": 0.25}), (4, {})):
        datagram = codec.encode(_message(seq) | extra, b"k")
        repeat = decoder.decode(datagram)
        parsed = codec.decode(datagram, b"k")
        assert _as_parsed(repeat).model_dump() == parsed.model_dump()
        assert type(repeat.heartbeat) is codec.Heartbeat
        with pytest.raises(ValidationError):
            repeat.heartbeat.seq = 0  # type: ignore[misc]


def test_encode_leads_with_what_changes_beat_after_beat() -> None:
    text = zlib.decompress(codec.encode({"ver": 3, "cpu": 0.5, "seq": 7, "id": "a"}, b"k")[:-64])
    assert text == b'{"id":"a","seq":7,"cpu":0.5,"ver":3}'
    assert codec.split_seq(text) == (b"a", 7, 0.5, b',"ver":3}')


@pytest.mark.parametrize(
    "text",
    [
        b'{"id":"amp-1","seq":1,"cpu":-1,"ver":3}',  # negative: the full parse refuses it
        b'{"id":"amp-1","seq":1,"cpu":1_0,"ver":3}',  # Python's float() would take it
        b'{"id":"amp-1","seq":1,"cpu":null,"ver":3}',
        b'{"seq":1,"id":"amp-1","ver":3}',  # another key order
        b'{"id":"amp-1","seq":01,"ver":3}',  # not a JSON integer
        b'{"id":"amp-1","seq":-1,"ver":3}',
        b'{"id":"amp-1","seq":1}',  # no comma after seq
    ],
)
def test_a_message_not_spelled_as_encode_spells_it_has_no_content_key(text: bytes) -> None:
    assert codec.split_seq(text) is None


def test_a_repeat_of_a_garbled_message_is_still_garbled() -> None:
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    bad = b'{"id":"amp-1","seq":1,"ver":2}'
    for seq in (1, 2):
        body = zlib.compress(bad.replace(b"1,", f"{seq},".encode(), 1))
        with pytest.raises(codec.Garbled):
            decoder.decode(body + codec.sign(body, b"k"))


def test_forgotten_senders_are_parsed_again() -> None:
    decoder = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM)
    decoder.decode(codec.encode(_message(1), b"k"))
    decoder.forget_others({"amp-2"})
    assert decoder._last == {}


class _NoMetrics:
    def inc(self, name: str, amount: float = 1) -> None:
        pass


def test_an_idle_listeners_beat_adds_nothing_once_its_row_is_written() -> None:
    writer = HealthWriter(None, _NoMetrics(), 1.0)  # type: ignore[arg-type]
    idle = codec.decode(codec.encode(_message(1), b"k"), b"k")
    writer.add_stats("lb-1", "amp-1", idle)
    assert list(writer._stats.counters) == [(LISTENER, "amp-1")]  # never written: it goes
    writer._stats = Deltas()
    writer._written[(LISTENER, "amp-1")] = 0
    writer.add_stats("lb-1", "amp-1", idle)
    assert writer._stats.counters == {}
    for busy in (_message(2, conns=1), _message(3, rx=10)):
        writer.add_stats("lb-1", "amp-1", codec.decode(codec.encode(busy, b"k"), b"k"))
        assert list(writer._stats.counters) == [(LISTENER, "amp-1")]
    writer.add_stats("lb-1", "amp-1", idle)  # pending: added, so the latest conns win
    assert writer._stats.counters[(LISTENER, "amp-1")] == [10, 0, 0, 0, 0]


def _decoded(message: dict[str, object]) -> tuple[codec.Heartbeat, bytes | None]:
    beat = codec.RepeatDecoder(b"k", codec.MAX_DATAGRAM).decode(codec.encode(message, b"k"))
    return beat.heartbeat, beat.content


def test_an_idle_beat_repeated_is_skipped_and_a_changed_one_is_not() -> None:
    writer = HealthWriter(None, _NoMetrics(), 1.0)  # type: ignore[arg-type]
    writer._written[(LISTENER, "amp-1")] = 0
    idle, idle_key = _decoded(_message(1))
    writer.add_stats("lb-1", "amp-1", idle, idle_key)
    assert writer._quiet == {"amp-1": idle_key}
    writer.add_stats("lb-1", "amp-1", idle, idle_key)
    assert writer._stats.counters == {}
    busy, busy_key = _decoded(_message(2, conns=4))
    writer.add_stats("lb-1", "amp-1", busy, busy_key)
    assert writer._stats.counters[(LISTENER, "amp-1")] == [0, 0, 4, 0, 0]
    assert writer._quiet == {}
    writer.add_stats("lb-1", "amp-1", idle, idle_key)  # pending: its 0 connections win
    assert writer._stats.counters[(LISTENER, "amp-1")] == [0, 0, 0, 0, 0]
    writer.forget_gone({})
    assert writer._quiet == {}


class _FailingPool:
    """A pool whose statements wait for ``release``, then fail as a lost database would."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def execute(self, *args: object) -> None:
        await self.release.wait()
        raise OSError("connection lost")


async def test_after_a_failed_flush_an_idle_repeat_sets_the_connections_again() -> None:
    pool = _FailingPool()
    writer = HealthWriter(pool, _NoMetrics(), 1.0)  # type: ignore[arg-type]
    writer._written[(LISTENER, "amp-1")] = 0
    busy, busy_key = _decoded(_message(1, conns=2))
    idle, idle_key = _decoded(_message(2))
    writer.add_stats("lb-1", "amp-1", busy, busy_key)
    flush = asyncio.create_task(writer.flush())
    await asyncio.sleep(0)  # the batch is out, its write under way
    writer.add_stats("lb-1", "amp-1", idle, idle_key)  # 0 as written: nothing to add
    assert writer._stats.counters == {}
    pool.release.set()
    with pytest.raises(OSError, match="connection lost"):
        await flush
    assert writer._stats.counters[(LISTENER, "amp-1")] == [0, 0, 2, 0, 0]  # merged back
    writer.add_stats("lb-1", "amp-1", idle, idle_key)  # the same idle beat: 0 wins again
    assert writer._stats.counters[(LISTENER, "amp-1")] == [0, 0, 0, 0, 0]


class _Rows:
    """A pool whose ``amphora_view`` holds ``ids`` (the directory's one query)."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def fetch(self, query: str, *args: list[str]) -> list[tuple[object, ...]]:
        ids = [i for i in self.ids if not args or i in args[0]]
        return [(i, None, "READY", 0) for i in ids]  # id, lb_id, status, seq


async def test_the_directory_prunes_only_after_amphorae_went_or_a_stray_miss() -> None:
    rows = _Rows()
    directory = AmphoraDirectory(rows, 1.0)  # type: ignore[arg-type]
    reloads: list[set[str]] = []
    prunes: list[set[str]] = []
    directory.on_reload(lambda records: reloads.append(set(records)))
    directory.on_prune(lambda records: prunes.append(set(records)))
    rows.ids = ["a", "b"]
    await directory.reload()
    await directory.reload()
    rows.ids = ["a", "b", "c"]
    await directory.reload()
    assert prunes == [] and len(reloads) == 3
    directory.missed("c")  # known now: nothing of it to forget
    await directory.reload()
    assert prunes == []
    directory.missed("x")  # a stray sender may have been remembered
    await directory.reload()
    assert prunes == [{"a", "b", "c"}]
    rows.ids = ["a", "c"]
    await directory.reload()
    await directory.reload()
    assert prunes == [{"a", "b", "c"}, {"a", "c"}]


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
