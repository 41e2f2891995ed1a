"""``fulcrum events tail`` as a user runs it: the real console script against real NATS servers.

It prints events as JSON lines, resumes after a server restart, and otherwise fails fast:
exit status 2 with exactly one line on stderr, within its time bounds, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from nats.aio.client import Client as NatsClient

from deploy.local.embedded import EmbeddedNats
from deploy.local.ports import free_tcp_port
from libs.common import bus, subjects
from libs.common.events import Envelope, Metadata, new_envelope
from libs.common.events.amphora import AmphoraDeleted
from libs.common.events.tail import TailOptions
from libs.common.settings import NatsSettings

FULCRUM = Path(sys.executable).parent / "fulcrum"
CONNECT_TIMEOUT = TailOptions().connect_timeout
RECONNECT_WINDOW = TailOptions().reconnect_window
STARTUP_SLACK = 8.0  # interpreter start and imports: 4.5 s on this 2-core box at load 35
META = Metadata(correlation_id="tail-test", actor="test")


def run_tail(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [str(FULCRUM), "events", "tail", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result, time.monotonic() - started


@asynccontextmanager
async def tail_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """The tail running in the background; killed (by its pid) if still running at the end."""
    proc = await asyncio.create_subprocess_exec(
        str(FULCRUM),
        "events",
        "tail",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def stream_ready(url: str) -> tuple[NatsClient, bus.JetStreamPublisher]:
    settings = NatsSettings(url=url)
    nc = await bus.connect(settings, "tail-test")
    await bus.ensure_stream(nc.jetstream(), settings)
    return nc, bus.JetStreamPublisher(nc.jetstream(), settings)


async def publish_event(publisher: bus.JetStreamPublisher, stream_id: str) -> Envelope:
    envelope = new_envelope(stream_id, 1, AmphoraDeleted(amphora_id=stream_id), META)
    await publisher.publish(
        subjects.event_subject(stream_id, envelope.event_type),
        json.dumps(envelope.to_wire()).encode(),
        str(envelope.event_id),
    )
    return envelope


async def read_line(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, object]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    assert line, "the tail ended without printing"
    body: dict[str, object] = json.loads(line)
    return body


def test_unreachable_nats_fails_fast_with_one_line() -> None:
    url = f"nats://127.0.0.1:{free_tcp_port()}"
    result, elapsed = run_tail("--nats-url", url, timeout=CONNECT_TIMEOUT + 20)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"fulcrum events tail: cannot reach NATS at {url} within {CONNECT_TIMEOUT:g} s"
    ]
    assert result.stdout == ""
    assert elapsed < CONNECT_TIMEOUT + STARTUP_SLACK


def test_missing_stream_fails_fast_with_one_line(nats_url: str) -> None:
    result, elapsed = run_tail("--nats-url", nats_url, timeout=20)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"fulcrum events tail: no stream {subjects.STREAM_NAME} on NATS at {nats_url} "
        "(is the stack up?)"
    ]
    assert elapsed < STARTUP_SLACK + 2


async def test_prints_stored_and_live_events_then_stops_at_count(nats_url: str) -> None:
    nc, publisher = await stream_ready(nats_url)
    poison_subject = subjects.event_subject("amphora-poison", "AmphoraDeleted")
    try:
        stored = await publish_event(publisher, "amphora-before")
        async with tail_process("--nats-url", nats_url, "--from-start", "--count", "3") as proc:
            first = await read_line(proc, timeout=STARTUP_SLACK + 5)
            live = await publish_event(publisher, "amphora-after")
            second = await read_line(proc, timeout=5)
            await nc.jetstream().publish(poison_subject, b"not json")
            poison = await read_line(proc, timeout=5)
            assert await asyncio.wait_for(proc.wait(), 5) == 0
            assert proc.stderr is not None
            assert await proc.stderr.read() == b""
    finally:
        await nc.close()
    assert [first["event_id"], second["event_id"]] == [str(stored.event_id), str(live.event_id)]
    assert [first["stream_sequence"], second["stream_sequence"]] == [1, 2]
    assert first["event_type"] == "AmphoraDeleted"
    assert poison == {"subject": poison_subject, "undecodable": "not json", "stream_sequence": 3}


async def test_resumes_after_a_server_crash_and_restart(nats_factory: EmbeddedNats) -> None:
    url = nats_factory.start()
    nc, publisher = await stream_ready(url)
    await publish_event(publisher, "amphora-one")
    await nc.close()
    async with tail_process("--nats-url", url, "--from-start", "--count", "2") as proc:
        assert (await read_line(proc, timeout=STARTUP_SLACK + 5))["stream_sequence"] == 1
        assert nats_factory.pid is not None
        os.kill(nats_factory.pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        nats_factory.start()
        nc, publisher = await stream_ready(url)
        try:
            after = await publish_event(publisher, "amphora-two")
            line = await read_line(proc, timeout=RECONNECT_WINDOW)
        finally:
            await nc.close()
        assert line["event_id"] == str(after.event_id)
        assert line["stream_sequence"] == 2  # the first event is not printed again
        assert await asyncio.wait_for(proc.wait(), 5) == 0


async def test_connection_lost_for_good_ends_with_one_line(nats_factory: EmbeddedNats) -> None:
    url = nats_factory.start()
    nc, publisher = await stream_ready(url)
    await publish_event(publisher, "amphora-one")
    await nc.close()
    async with tail_process("--nats-url", url, "--from-start") as proc:
        await read_line(proc, timeout=STARTUP_SLACK + 5)  # following the stream
        nats_factory.stop()
        lost_at = time.monotonic()
        code = await asyncio.wait_for(proc.wait(), RECONNECT_WINDOW + 10)
        elapsed = time.monotonic() - lost_at
        assert proc.stderr is not None
        stderr = (await proc.stderr.read()).decode()
    assert code == 2
    assert stderr.splitlines() == [
        f"fulcrum events tail: lost the connection to NATS at {url}; "
        f"not back within {RECONNECT_WINDOW:g} s"
    ]
    # The tail may notice the disconnect a moment before stop() returns.
    assert RECONNECT_WINDOW - 1 <= elapsed < RECONNECT_WINDOW + 3
