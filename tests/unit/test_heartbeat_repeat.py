"""An idle amphora's beat is not built again: `show stat` fields equal to the previous
answer's give the same rows, and a sender whose readings did not change sends its last message
that moved no counter, with a new seq and cpu, byte for byte what building it would send; any
change in a counter, a status or the UDP report is built and sent at that beat."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from libs.common import heartbeat_codec as codec
from services.amphora import heartbeat
from services.amphora.adapters.haproxy import parse_show_stat, stat_fields, stat_rows
from services.amphora.heartbeat import STAT_COLUMNS, HeartbeatConfig, HeartbeatSender

KEY = b"repeat-key"
SIGNER = codec.Signer(KEY)
LISTENER = "6f1c1bde-2d5e-4b7a-9c41-0a3c5d9e7f10"
BACKEND = f"0b7e5c52-8f0e-4a4c-b6f3-5c7d2e9a1b22:{LISTENER}"
MEMBER = "4c2a7d1e-3b5f-4e6a-8d9c-1f0e2d3c4b5a"


def spelled_as_before(message: dict[str, Any]) -> bytes:
    """The JSON text encode wrote before it was split in parts: id, seq, cpu lead."""
    leading = {name: message[name] for name in ("id", "seq", "cpu") if name in message}
    ordered = leading | {k: v for k, v in message.items() if k not in leading}
    return json.dumps(ordered, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "message",
    [
        {"id": "amp-1", "seq": 7, "ver": 3, "listeners": {}, "pools": {}},
        {"ver": 3, "cpu": 0.0123, "pools": {"p": {"status": "UP"}}, "seq": 9, "id": "amp-é"},
        {"id": "a", "seq": 1},
        {"id": "a", "seq": 1, "cpu": 2.5},
        {"ver": 3, "listeners": {}},
    ],
)
def test_a_message_in_parts_is_the_message_encoded_whole(message: dict[str, Any]) -> None:
    whole = codec.encode(message, KEY)
    assert zlib.decompress(whole[: -codec.MAC_LENGTH]) == spelled_as_before(message)
    if "id" in message:
        parts = codec.encode_parts(
            message["id"], message["seq"], message.get("cpu"), codec.rest(message), SIGNER
        )
        assert parts == whole


HEADER = "# pxname,svname,scur,stot,bin,bout,ereq,eresp,status,weight,lastchg,type,rate,\n"


def answer(*, lastchg: int = 5, stot: int = 3, status: str = "no check") -> str:
    return (
        HEADER
        + f"{LISTENER},FRONTEND,0,{stot},10,20,0,,OPEN,,,0,0,\n"
        + f"{BACKEND},{MEMBER},0,1,5,6,,0,{status},1,{lastchg},2,0,\n"
        + f"{BACKEND},BACKEND,0,1,5,6,0,0,UP,1,{lastchg},1,0,\n"
    )


def test_stat_fields_differ_only_where_a_wanted_column_does() -> None:
    idle = stat_fields(answer(), STAT_COLUMNS)
    assert stat_fields(answer(lastchg=6), STAT_COLUMNS) == idle  # not a column a beat reads
    assert stat_fields(answer(stot=4), STAT_COLUMNS) != idle
    assert stat_fields(answer(status="DOWN"), STAT_COLUMNS) != idle
    assert stat_rows(idle) == parse_show_stat(answer(), STAT_COLUMNS)
    short = stat_fields(HEADER + f"{LISTENER},FRONTEND,0,3\n", STAT_COLUMNS)
    assert stat_rows(short) == [{"pxname": LISTENER, "svname": "FRONTEND", "scur": 0, "stot": 3}]


async def test_an_unchanged_reading_is_sent_as_built_without_building_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    idle = parse_show_stat(answer(), STAT_COLUMNS)
    busier = parse_show_stat(answer(stot=4), STAT_COLUMNS)
    down = parse_show_stat(answer(stot=4, status="DOWN"), STAT_COLUMNS)
    readings = [idle, idle, idle, idle, busier, busier, busier, down, down, idle, idle, idle]
    udp: list[tuple[dict[str, Any], dict[str, Any]]] = [({}, {})] * len(readings)
    udp.append(({"udp-1": {"status": "OPEN"}}, {}))  # the UDP report alone changes
    readings.append(idle)
    cpu = iter([1.0 + 0.01 * n for n in range(len(readings))])
    built = 0
    build = heartbeat.build_message

    def counted(*args: Any) -> Any:
        nonlocal built
        built += 1
        return build(*args)

    monkeypatch.setattr(heartbeat, "build_message", counted)
    pending = iter(readings)
    extras = iter(udp)

    async def read() -> list[Any]:
        return next(pending)

    sender = HeartbeatSender(
        HeartbeatConfig("amp-1", KEY, (("127.0.0.1", 9),), 1.0),
        read,
        extra=lambda: next(extras),
        cpu_seconds=lambda: next(cpu),
    )
    baseline: heartbeat.Baseline = {}
    builds = []
    for rows, (listeners, pools) in zip(readings, udp, strict=True):
        datagram = await sender.beat()
        text = zlib.decompress(datagram[: -codec.MAC_LENGTH])
        seq_cpu = json.loads(text)
        expected, baseline = build(seq_cpu["id"], seq_cpu["seq"], rows, baseline)
        expected["listeners"].update(listeners)
        expected["pools"].update(pools)
        if "cpu" in seq_cpu:
            expected["cpu"] = seq_cpu["cpu"]
        assert datagram == codec.encode(expected, KEY)
        builds.append(built)
    # Built: the first reading (its counters whole), the next (they moved no more), then
    # repeats; the same for the busier reading; the member down at once (no counter moved);
    # idle again (a counter went down: sent whole, then repeated), and the changed UDP report.
    assert builds == [1, 2, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8]
    assert sender.sent == 0  # beat() builds; run() sends


async def test_a_repeat_grown_past_one_datagram_is_built_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """seq and cpu may grow the message by a few bytes: a repeat that no longer fits one
    datagram goes through the build, which drops the member counters."""
    rows = parse_show_stat(answer(), STAT_COLUMNS)

    async def read() -> list[Any]:
        return rows

    sender = HeartbeatSender(HeartbeatConfig("amp-1", KEY, (("127.0.0.1", 9),), 1.0), read)
    for _ in range(2):
        await sender.beat()
    assert sender._repeat is not None
    # Below the repeat's size by more than a new seq's few bytes (compressed, the wall clock's
    # digits move its length either way), above the message without member counters.
    monkeypatch.setattr(codec, "MAX_DATAGRAM", len(await sender.beat()) - 8)
    decoded = codec.decode(await sender.beat(), KEY, max_datagram=2**16)
    assert decoded.pools[BACKEND].member_stats == {}


def test_a_message_spelled_again_compresses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message but for seq and cpu is deflated once (``codec.rest``); every datagram of it
    stores its new head uncompressed before those blocks, a zlib stream any receiver inflates."""
    message = {"ver": 3, "listeners": {LISTENER: {"status": "OPEN"}}, "pools": {}}
    rest = codec.rest(message)

    def no_compression(*args: object) -> None:
        raise AssertionError("compressed again")

    monkeypatch.setattr(codec.zlib, "compress", no_compression)
    monkeypatch.setattr(codec.zlib, "compressobj", no_compression)
    for seq, cpu in ((1, None), (2, 0.25), (10**13, 1e-05)):
        datagram = codec.encode_parts("amp-1", seq, cpu, rest, SIGNER)
        assert rest.deflated in datagram
        whole = message | {"id": "amp-1", "seq": seq} | ({} if cpu is None else {"cpu": cpu})
        assert zlib.decompress(datagram[: -codec.MAC_LENGTH]) == spelled_as_before(whole)
        assert codec.decode(datagram, KEY).seq == seq
