"""What heartbeats read from a real HAProxy through the agent's data plane: one kept-open stats
session serves many beats; after a reload (announced or not) the serving process answers and the
retired one is let go; a dead HAProxy fails the next read at once and a restarted one is read
again; a session HAProxy timed out is replaced; a load that ends the session while a read is
in flight lets that read finish first. An idle HAProxy reads as the same rows beat after beat
(its message is not built again), and traffic or a member's change shows at the next beat.
Senders of one event loop (an agent host's amphorae) beat in the same tick, each with its own
listeners, and a dead HAProxy shows in its amphora's next beat. Loopback only; every HAProxy
is stopped by the data plane."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections.abc import Collection
from pathlib import Path

import pytest

from libs.common import heartbeat_codec as codec
from libs.common.agent_contract import ServerChange, ServerState
from libs.common.errors import FulcrumError
from libs.common.tasks import background
from services.amphora.adapters import haproxy as haproxy_adapter
from services.amphora.adapters.haproxy import HaproxyDataPlane, StatFields
from services.amphora.adapters.haproxy_stats import StatsSession
from services.amphora.heartbeat import STAT_COLUMNS, HeartbeatConfig, HeartbeatSender
from tests.integration.conftest import gone_within
from tests.integration.test_amphora_agent import HAPROXY, free_port

KEY = b"stats-session-key"


def config(plane: HaproxyDataPlane, frontend: str) -> str:
    return (
        "global\n"
        f"    stats socket {plane.stats_socket} mode 600 level admin\n"
        "    hard-stop-after 60s\n"  # a retired process lingers unless its sessions end
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 10s\n"
        "    timeout server 10s\n"
        f"frontend {frontend}\n"
        f"    bind 127.0.0.1:{free_port()}\n"
        f"    default_backend pool-1:{frontend}\n"
        f"backend pool-1:{frontend}\n"
        "    server member-a 127.0.0.1:9\n"
        "    server member-b 127.0.0.1:9\n"
    )


async def accepted(plane: HaproxyDataPlane) -> int:
    """Connections the serving HAProxy accepted (CLI ones included), by a one-off ask."""
    info = await StatsSession(plane.stats_socket)._once("show info")
    return int(next(line for line in info.splitlines() if line.startswith("CumConns:"))[9:])


async def serving(plane: HaproxyDataPlane) -> int:
    return await plane.serving_pid(5)


async def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until every thread of it is stopped: kill() returns before
    they are, and on a loaded box a worker thread still answered once in a while."""
    os.kill(pid, signal.SIGSTOP)
    for _ in range(400):  # bounded: 2 s
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            stat = (task / "stat").read_text()
            states.append(stat[stat.rindex(")") + 2])
        if all(state in "Tt" for state in states):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"worker {pid} did not stop: thread states {states}")


def frontends(rows: list[dict[str, str | int | None]]) -> dict[str, object]:
    return {str(row["pxname"]): row["status"] for row in rows if row["type"] == 0}


def commands_asked(plane: HaproxyDataPlane) -> list[str]:
    """The commands the plane's stats session is asked from now on, in order."""
    asked: list[str] = []
    ask = plane._stats.ask

    async def recording(command: str) -> str:
        asked.append(command)
        return await ask(command)

    plane._stats.ask = recording  # type: ignore[method-assign]
    return asked


def port_of(plane: HaproxyDataPlane) -> int:
    found = re.search(r"bind 127\.0\.0\.1:(\d+)", plane.config_text() or "")
    assert found is not None
    return int(found.group(1))


async def one_request(plane: HaproxyDataPlane) -> None:
    """One HTTP request through the listener, answered (its members refuse: a 503)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(plane))
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.")
    writer.close()
    await writer.wait_closed()


async def kept_session(plane: HaproxyDataPlane) -> socket.socket:
    """The stats session's socket once a listener serves and a read opened it."""
    await plane.apply(config(plane, "listener-1"))
    await plane.show_stat(STAT_COLUMNS)
    session = plane._stats._sock
    assert session is not None
    return session


def frontend_row(rows: list[dict[str, str | int | None]]) -> dict[str, str | int | None]:
    (row,) = (row for row in rows if row["type"] == 0)
    return row


async def test_beats_share_one_stats_connection(plane: HaproxyDataPlane) -> None:
    await plane.apply(config(plane, "listener-1"))
    await plane.show_stat(STAT_COLUMNS)
    before = await accepted(plane)
    for _ in range(30):
        rows = await plane.show_stat(STAT_COLUMNS)
        assert frontends(rows) == {"listener-1": "OPEN"}
        assert {row["svname"] for row in rows if row["type"] == 2} == {"member-a", "member-b"}
        assert all(set(row) <= STAT_COLUMNS for row in rows)
    assert await accepted(plane) == before + 1  # that ask's own connection only


async def test_after_a_load_the_new_process_answers_and_the_old_one_is_let_go(
    plane: HaproxyDataPlane,
) -> None:
    await plane.apply(config(plane, "listener-1"))
    await plane.show_stat(STAT_COLUMNS)
    retired = await serving(plane)
    await plane.apply(config(plane, "listener-2"))
    assert frontends(await plane.show_stat(STAT_COLUMNS)) == {"listener-2": "OPEN"}
    assert await gone_within(retired, 5), "the kept session held the retired process"


async def test_a_reload_the_data_plane_did_not_announce_is_read_from_the_new_process(
    plane: HaproxyDataPlane,
) -> None:
    """A reload outside ``apply``: the retired process's stopped frontend makes the read ask
    the serving one, and the retired one is let go."""
    await plane.apply(config(plane, "listener-1"))
    await plane.show_stat(STAT_COLUMNS)
    retired = await serving(plane)
    await plane._reload()
    assert frontends(await plane.show_stat(STAT_COLUMNS)) == {"listener-1": "OPEN"}
    assert await gone_within(retired, 5), "the kept session held the retired process"


async def test_a_dead_haproxy_fails_the_next_read_at_once_and_a_new_one_is_read(
    plane: HaproxyDataPlane,
) -> None:
    await plane.apply(config(plane, "listener-1"))
    await plane.show_stat(STAT_COLUMNS)
    os.kill(await serving(plane), signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(FulcrumError):
        while time.monotonic() - started < 5:
            await plane.show_stat(STAT_COLUMNS)
            await asyncio.sleep(0.01)
    assert time.monotonic() - started < 1
    await plane.stop()
    await plane.apply(config(plane, "listener-2"))
    assert frontends(await plane.show_stat(STAT_COLUMNS)) == {"listener-2": "OPEN"}


async def test_a_load_while_a_beat_reads_ends_the_session_after_that_answer(
    plane: HaproxyDataPlane,
) -> None:
    """A load's close() lands while a beat's read is in flight (the event loop still reads its
    socket): that read completes, and the next reads go through a new session."""
    await plane.apply(config(plane, "listener-1"))
    await plane.show_stat(STAT_COLUMNS)
    for _ in range(3):
        stopped = await serving(plane)
        await freeze(stopped)  # it cannot answer until continued
        try:
            reading = asyncio.create_task(plane.show_stat(STAT_COLUMNS))
            for _ in range(100):  # bounded: the read sends its command, then waits
                await asyncio.sleep(0.005)
                if plane._stats._busy:
                    break
            assert plane._stats._busy and not reading.done()
            plane._stats.close()
        finally:
            os.kill(stopped, signal.SIGCONT)
        rows = await asyncio.wait_for(reading, 5)
        assert frontends(rows) == {"listener-1": "OPEN"}
        assert frontends(await asyncio.wait_for(plane.show_stat(STAT_COLUMNS), 5)) == {
            "listener-1": "OPEN"
        }
        assert not plane._stats.reused  # a new session, the old one closed


async def test_a_session_haproxy_ended_between_beats_is_dropped_at_once(
    plane: HaproxyDataPlane,
) -> None:
    session = await kept_session(plane)
    session.send(b"quit\n")  # HAProxy closes it, as at a stop
    for _ in range(200):  # bounded: 2 s
        if plane._stats._sock is None:
            break
        await asyncio.sleep(0.01)
    assert plane._stats._sock is None  # its end was read when it came, not by the next ask
    assert frontends(await plane.show_stat(STAT_COLUMNS)) == {"listener-1": "OPEN"}
    assert not plane._stats.reused


async def test_an_answer_no_command_waits_for_does_not_open_the_next_one(
    plane: HaproxyDataPlane,
) -> None:
    session = await kept_session(plane)
    session.send(b"show info\n")  # answered while no exchange is under way
    await asyncio.sleep(0.2)
    assert frontends(await plane.show_stat(STAT_COLUMNS)) == {"listener-1": "OPEN"}
    assert plane._stats.reused


async def test_a_kept_session_stays_registered_with_the_event_loop(
    plane: HaproxyDataPlane,
) -> None:
    """An exchange neither adds nor removes the session's reader (two epoll_ctl each)."""
    session = await kept_session(plane)
    selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
    registered = selector.get_key(session.fileno())
    for _ in range(5):
        await plane.show_stat(STAT_COLUMNS)
        assert selector.get_key(session.fileno()) is registered
    assert plane._stats._sock is session


async def test_an_idle_haproxy_repeats_its_beat_and_traffic_or_a_member_change_shows_next(
    plane: HaproxyDataPlane,
) -> None:
    await plane.apply(config(plane, "listener-1"))
    sender = HeartbeatSender(
        HeartbeatConfig("amp-1", KEY, (("127.0.0.1", 9),), 1.0),
        lambda: plane.heartbeat_stat(STAT_COLUMNS),
        plane.state_dir,
    )

    async def beat() -> codec.Heartbeat:
        return codec.decode(await sender.beat(), KEY)

    for _ in range(2):
        await beat()
    idle = await plane.show_stat(STAT_COLUMNS)
    assert await plane.show_stat(STAT_COLUMNS) is idle  # the same fields: not converted again
    assert sender._repeat is not None  # and the sender's message not built again
    assert plane._quiet is not None  # and HAProxy asked for its frontends alone
    repeated = await beat()
    assert repeated.listeners["listener-1"].stats.totconns == 0

    await one_request(plane)
    busy = await beat()
    assert busy.listeners["listener-1"].stats.totconns == 1
    assert busy.listeners["listener-1"].stats.rx > 0
    assert (await beat()).listeners["listener-1"].stats.totconns == 0

    maint = ServerChange(state=ServerState.MAINT)
    await plane.change_server("pool-1:listener-1", "member-a", maint)
    members = (await beat()).pools["pool-1:listener-1"].members
    assert members == {"member-a": "MAINT", "member-b": "no check"}


async def test_a_quiet_haproxy_is_read_by_its_frontends_until_a_session_or_a_change(
    plane: HaproxyDataPlane,
) -> None:
    """No check runs: while no session opened since the last full answer (every frontend's
    row the same, ``scur`` 0), a beat asks for the frontends alone and gets that answer;
    a session (ended or open), a runtime change or a load makes the next read a full one.
    A full answer is quiet once its frontends are those of the full answer before it."""
    full, frontends = "show stat", "show stat -1 1 -1"
    await plane.apply(config(plane, "listener-1"))
    asked = commands_asked(plane)
    quiet = await plane.heartbeat_stat(STAT_COLUMNS)
    for _ in range(3):
        assert await plane.heartbeat_stat(STAT_COLUMNS) is quiet
    assert asked == [full, full, frontends, frontends]

    await one_request(plane)
    after = await plane.heartbeat_stat(STAT_COLUMNS)
    assert asked[-2:] == [frontends, full]
    assert frontend_row(after)["stot"] == 1 and frontend_row(after)["scur"] == 0
    await one_request(plane)  # a session at every beat: read in full at once, not asked twice
    del asked[:]
    busier = await plane.heartbeat_stat(STAT_COLUMNS)
    assert frontend_row(busier)["stot"] == 2
    assert await plane.heartbeat_stat(STAT_COLUMNS) is busier  # settled: quiet from now on
    assert await plane.heartbeat_stat(STAT_COLUMNS) is busier
    assert asked == [full, full, frontends]

    _, held = await asyncio.open_connection("127.0.0.1", port_of(plane))
    try:
        for _ in range(100):  # bounded: HAProxy accepts it within a few beats' time
            rows = await plane.heartbeat_stat(STAT_COLUMNS)
            if frontend_row(rows)["scur"] == 1:
                break
            await asyncio.sleep(0.02)
        del asked[:]
        for _ in range(2):  # a session open: every read is a full one
            assert frontend_row(await plane.heartbeat_stat(STAT_COLUMNS))["scur"] == 1
        assert asked == [full, full]
    finally:
        held.close()
        await held.wait_closed()

    for _ in range(100):
        if frontend_row(await plane.heartbeat_stat(STAT_COLUMNS))["scur"] == 0:
            break
        await asyncio.sleep(0.02)
    await plane.heartbeat_stat(STAT_COLUMNS)
    maint = ServerChange(state=ServerState.MAINT)
    await plane.change_server("pool-1:listener-1", "member-a", maint)
    del asked[:]
    rows = await plane.heartbeat_stat(STAT_COLUMNS)
    assert asked == [full]
    assert {row["svname"]: row["status"] for row in rows if row["type"] == 2} == {
        "member-a": "MAINT",
        "member-b": "no check",
    }
    for _ in range(2):
        assert await plane.heartbeat_stat(STAT_COLUMNS) is rows
    assert asked == [full, full, frontends]
    await plane.apply(config(plane, "listener-2"))
    del asked[:]
    assert frontend_row(await plane.heartbeat_stat(STAT_COLUMNS))["pxname"] == "listener-2"
    assert asked == [full]


async def test_a_quiet_haproxy_s_same_frontends_answer_is_not_parsed_again(
    plane: HaproxyDataPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a frontends-only answer matched the quiet answer's frontends, the same text again
    gives that answer unparsed; a session changes the text, which is parsed and read in full."""
    full, frontends = "show stat", "show stat -1 1 -1"
    await plane.apply(config(plane, "listener-1"))
    asked = commands_asked(plane)
    await plane.heartbeat_stat(STAT_COLUMNS)
    quiet = await plane.heartbeat_stat(STAT_COLUMNS)
    parsed: list[str] = []
    parse = haproxy_adapter.stat_fields

    def counted(text: str, columns: Collection[str] | None = None) -> StatFields:
        parsed.append(text.splitlines()[1].split(",")[1])  # the first row's svname
        return parse(text, columns)

    monkeypatch.setattr(haproxy_adapter, "stat_fields", counted)
    for _ in range(4):
        assert await plane.heartbeat_stat(STAT_COLUMNS) is quiet
    assert asked == [full, full, frontends, frontends, frontends, frontends]
    assert parsed == ["FRONTEND"]  # the first frontends-only answer alone

    await one_request(plane)
    del parsed[:]
    after = await plane.heartbeat_stat(STAT_COLUMNS)
    assert frontend_row(after)["stot"] == 1
    assert asked[-2:] == [frontends, full] and len(parsed) == 2


async def test_while_checks_run_every_heartbeat_read_is_a_full_one(
    plane: HaproxyDataPlane,
) -> None:
    """A check may change a member's status with no session: each read asks for every row,
    and a member that fails its checks shows DOWN at the next read."""
    text = config(plane, "listener-1").replace(
        "    server member-a 127.0.0.1:9\n",
        f"    server member-a 127.0.0.1:{free_port()} check inter 100ms fall 1 rise 1\n",
    )
    await plane.apply(text)
    asked = commands_asked(plane)
    statuses: list[object] = []
    for _ in range(100):  # bounded: 5 s
        rows = await plane.heartbeat_stat(STAT_COLUMNS)
        statuses.append(next(row["status"] for row in rows if row["svname"] == "member-a"))
        if statuses[-1] == "DOWN" and len(statuses) >= 3:
            break
        await asyncio.sleep(0.05)
    assert statuses[-1] == "DOWN"
    assert set(asked) == {"show stat"}


async def test_senders_of_one_loop_beat_together_each_with_its_own_listeners(
    tmp_path: Path,
) -> None:
    interval = 0.4
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    planes = [
        HaproxyDataPlane(HAPROXY, tmp_path / f"amp-{i}", reload_timeout=10, drain_timeout=1)
        for i in range(2)
    ]
    loop = asyncio.get_running_loop()

    async def beats(seconds: float) -> list[tuple[float, codec.Heartbeat]]:
        got: list[tuple[float, codec.Heartbeat]] = []
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                datagram = await asyncio.wait_for(loop.sock_recv(receiver, 65536), left)
            except TimeoutError:
                break
            got.append((loop.time(), codec.decode(datagram, KEY)))
        return got

    try:
        for i, plane in enumerate(planes):
            await plane.prepare()
            await plane.apply(config(plane, f"listener-{i}"))
        senders = [
            HeartbeatSender(
                HeartbeatConfig(f"amp-{i}", KEY, (receiver.getsockname(),), interval),
                lambda plane=plane: plane.show_stat(STAT_COLUMNS),  # type: ignore[misc]
                plane.state_dir,
                cpu_seconds=plane.cpu_seconds,
            )
            for i, plane in enumerate(planes)
        ]
        async with background(senders[0].run(), "beats-0"):
            await asyncio.sleep(interval / 3)  # the second starts out of step
            async with background(senders[1].run(), "beats-1"):
                await beats(interval)  # both past their first beats
                seen = await beats(3 * interval)
                ids = [beat.id for _, beat in seen]
                assert ids.count("amp-0") >= 2 and ids.count("amp-1") >= 2
                for _, beat in seen:
                    assert set(beat.listeners) == {f"listener-{beat.id[-1]}"}
                # In step: each beat has the other amphora's within a few ms.
                for at, beat in seen:
                    assert any(
                        other.id != beat.id and abs(when - at) < interval / 4
                        for when, other in seen
                    ), seen
                os.kill(await serving(planes[1]), signal.SIGKILL)
                killed = loop.time()
                after = [(when, beat) for when, beat in await beats(2 * interval) if when > killed]
                first = next(beat for _, beat in after if beat.id == "amp-1")
                assert first.listeners == {}  # its next beat, not a later one
                assert all(b.listeners for _, b in after if b.id == "amp-0")
    finally:
        for plane in planes:
            await plane.stop()
        receiver.close()
