"""Heartbeats: every ``heartbeat_interval`` the agent tells the health service it lives.

Each beat reads HAProxy's ``show stat`` through the agent's data plane and sends one UDP
datagram (``libs.common.heartbeat_codec``: Octavia's v3 message, zlib, hex HMAC-SHA256) to the
next configured health endpoint, round-robin as Octavia's sender does. Frontends are listeners,
backends ``<pool_id>:<listener_id>`` pools, servers members (the renderer's names). Listener
and member counters go out as deltas against the previous beat (a counter that went down, after
an HAProxy restart, is sent whole); the baseline is kept in ``<state_dir>/heartbeat-counters.json``
so a restarted agent does not count HAProxy's traffic twice. A message that would not fit one
datagram (``codec.MAX_DATAGRAM``) goes out without its member counters, whose baseline then stays
where it was: the next beat that fits carries what this one left out.
Without HAProxy running the beat still goes out, with no listeners: a fresh or spare
amphora is seen alive. UDP listeners (served in the kernel, not by HAProxy) are added with
their members' states from the agent's monitors.

The senders of one event loop (an agent host's amphorae) beat on one schedule
(``beat_ticks``): one wake-up per interval for all of them, not one each. An idle amphora's
message is not built again: a beat whose rows (and UDP report) equal those of the last message
that moved no counter sends that message's JSON with a new seq and cpu (``codec.encode_parts``),
the bytes a build would give; HAProxy is still asked every beat (its frontends alone while
they prove nothing moved: ``HaproxyDataPlane.heartbeat_stat``), so any change in a status or a
counter is built and sent at the beat that reads it.

``seq`` is the wall clock in milliseconds, kept strictly increasing, so it keeps growing across
agent restarts and the receiver can refuse replays by comparing it with the last one accepted.
Heartbeats are enabled by configuring both ``heartbeat_key`` and ``health_endpoints``; one
without the other is refused at start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import socket
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from libs.common import heartbeat_codec as codec
from libs.common.agent_contract import StatsRow
from libs.common.errors import ConfigurationError, FulcrumError
from libs.common.metrics import Metrics
from libs.common.tasks import background
from services.amphora.settings import AmphoraSettings

log = logging.getLogger(__name__)

COUNTERS_FILE: Final = "heartbeat-counters.json"
# `show stat` type column.
_FRONTEND, _BACKEND, _SERVER = 0, 1, 2
# Counters sent as deltas: message field -> `show stat` column, for frontends and for servers
# (a server has no request errors; its failed responses stand in for them).
_DELTAS: Final = (("rx", "bin"), ("tx", "bout"), ("totconns", "stot"), ("ereq", "ereq"))
_SERVER_DELTAS: Final = (("rx", "bin"), ("tx", "bout"), ("totconns", "stot"), ("ereq", "eresp"))
# Baseline keys of members: "<backend>/<member_id>" (listener keys never hold a "/").
_MEMBER_KEY_MARK: Final = "/"
# Every `show stat` column `build_message` reads: a beat asks the data plane for these only.
STAT_COLUMNS: Final = frozenset(
    {"type", "pxname", "svname", "status", "weight", "scur"}
    | {column for _, column in _DELTAS + _SERVER_DELTAS}
)

ReadStats = Callable[[], Awaitable[list[StatsRow]]]
# The listeners and pools HAProxy does not serve (UDP, in the kernel), in the message's form;
# new dicts each call (a beat compares them with the previous beat's).
ExtraReport = Callable[[], tuple[dict[str, Any], dict[str, Any]]]
# listener id, or "<backend>/<member_id>" -> the raw `show stat` counters of the previous beat,
# in _DELTAS (_SERVER_DELTAS) order.
Baseline = dict[str, list[int]]


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); raises ConfigurationError."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(f"health endpoint {text!r} is not host:port")
    return host, int(port)


@dataclass(frozen=True)
class HeartbeatConfig:
    amphora_id: str
    key: bytes
    endpoints: tuple[tuple[str, int], ...]
    interval: float

    @classmethod
    def from_settings(cls, settings: AmphoraSettings) -> HeartbeatConfig | None:
        """The sender's configuration; None when heartbeats are off (neither key nor endpoints
        set). Raises ConfigurationError when only one is set or a value is unusable."""
        key, endpoints = settings.heartbeat_key, settings.health_endpoints
        if not key and not endpoints:
            return None
        if not key.strip():
            raise ConfigurationError(
                "FULCRUM_AMPHORA_HEALTH_ENDPOINTS is set but FULCRUM_AMPHORA_HEARTBEAT_KEY is "
                "empty: heartbeats could not be authenticated"
            )
        if not endpoints:
            raise ConfigurationError(
                "FULCRUM_AMPHORA_HEARTBEAT_KEY is set but FULCRUM_AMPHORA_HEALTH_ENDPOINTS is "
                'empty: give a JSON list such as ["127.0.0.1:5555"]'
            )
        if settings.heartbeat_interval <= 0:
            raise ConfigurationError("FULCRUM_AMPHORA_HEARTBEAT_INTERVAL must be positive")
        return cls(
            amphora_id=settings.amphora_id,
            key=key.encode(),
            endpoints=tuple(parse_endpoint(e) for e in endpoints),
            interval=settings.heartbeat_interval,
        )


def _count(row: StatsRow, column: str) -> int:
    value = row.get(column)
    return value if isinstance(value, int) and value > 0 else 0


def _member_status(row: StatsRow) -> str:
    """HAProxy's server status in the v3 vocabulary: UP, DOWN, DRAIN, MAINT or "no check"."""
    status = str(row.get("status") or "")
    if status.startswith("UP"):
        return "DRAIN" if row.get("weight") == 0 else "UP"
    if status.startswith("DOWN"):
        return "DOWN"
    if status in ("DRAIN", "NOLB"):
        return "DRAIN"
    if status.startswith("MAINT"):
        return "MAINT"
    return status  # "no check", or a state the receiver will ignore


def _counters(
    row: StatsRow, columns: tuple[tuple[str, str], ...], before: list[int] | None
) -> tuple[dict[str, int], list[int]]:
    """The message's counters of one row (deltas against ``before``, ``conns`` current) and the
    raw counters to keep as the next baseline."""
    raw = [_count(row, column) for _, column in columns]
    stats: dict[str, int] = {"conns": _count(row, "scur")}
    for i, (field, _) in enumerate(columns):
        previous = before[i] if before is not None and len(before) > i else 0
        stats[field] = raw[i] - previous if raw[i] >= previous else raw[i]
    return stats, raw


def build_message(
    amphora_id: str, seq: int, rows: list[StatsRow], baseline: Baseline
) -> tuple[dict[str, Any], Baseline]:
    """The v3 message for ``rows`` and the baseline for the next beat. Pure."""
    listeners: dict[str, Any] = {}
    pools: dict[str, Any] = {}
    current: Baseline = {}
    for row in rows:
        kind, proxy = row.get("type"), str(row.get("pxname") or "")
        if kind == _FRONTEND:
            if row.get("status") not in ("OPEN", "FULL"):
                continue  # STOP: a disabled frontend serves nothing
            stats, current[proxy] = _counters(row, _DELTAS, baseline.get(proxy))
            listeners[proxy] = {"status": row["status"], "stats": stats}
        elif kind == _BACKEND and ":" in proxy:
            pool = _pool(pools, proxy)
            pool["status"] = "UP" if row.get("status") == "UP" else "DOWN"
        elif kind == _SERVER and ":" in proxy:
            pool = _pool(pools, proxy)
            member = str(row.get("svname"))
            pool["members"][member] = _member_status(row)
            key = f"{proxy}{_MEMBER_KEY_MARK}{member}"
            stats, current[key] = _counters(row, _SERVER_DELTAS, baseline.get(key))
            pool["member_stats"][member] = stats
    message = {
        "id": amphora_id,
        "seq": seq,
        "ver": codec.MESSAGE_VERSION,
        "listeners": listeners,
        "pools": pools,
    }
    return message, current


def _pool(pools: dict[str, Any], proxy: str) -> dict[str, Any]:
    pool: dict[str, Any] = pools.setdefault(
        proxy, {"status": "DOWN", "members": {}, "member_stats": {}}
    )
    return pool


def without_member_stats(
    message: dict[str, Any], baseline: Baseline, previous: Baseline
) -> tuple[dict[str, Any], Baseline]:
    """``message`` with no member counters, and the baseline that keeps the members' previous
    counters (so the next beat reports what this one leaves out). Pure."""
    pools = {
        key: {k: v for k, v in pool.items() if k != "member_stats"}
        for key, pool in message["pools"].items()
    }
    kept = {k: v for k, v in baseline.items() if _MEMBER_KEY_MARK not in k}
    kept.update((k, v) for k, v in previous.items() if _MEMBER_KEY_MARK in k)
    return message | {"pools": pools}, kept


@dataclass(frozen=True)
class _Repeat:
    """A message that moved no counter: while HAProxy's ``rows`` and the ``extra`` report
    stay equal, every next message is this one (``rest``, ``codec.rest``) but for seq and cpu
    (counters equal to the baseline are zero deltas again, and leave the baseline where it is),
    so it is not built again."""

    rows: list[StatsRow]
    extra: tuple[dict[str, Any], dict[str, Any]] | None
    rest: codec.Rest


class HeartbeatSender:
    """Sends heartbeats until cancelled. ``sent`` counts datagrams handed to the kernel."""

    def __init__(
        self,
        config: HeartbeatConfig,
        read_stats: ReadStats,
        state_dir: Path | None = None,
        extra: ExtraReport | None = None,
        metrics: Metrics | None = None,
        cpu_seconds: Callable[[], float | None] | None = None,
    ) -> None:
        self._cpu_seconds = cpu_seconds
        # (monotonic time, HAProxy's CPU seconds) at the previous beat.
        self._cpu_before: tuple[float, float] | None = None
        self._config = config
        self._signer = codec.Signer(config.key)
        self._read_stats = read_stats
        self._extra = extra
        self._counters_file = state_dir / COUNTERS_FILE if state_dir is not None else None
        self._baseline = self._load_baseline()
        self._saved = self._baseline  # what the counters file holds
        self._seq = 0
        # The last message that moved no counter, while the readings stay the same: the next
        # message but for seq and cpu (an idle amphora's, beat after beat).
        self._repeat: _Repeat | None = None
        self._next_endpoint = 0
        self._early = False  # beat_now came while no wait was under way
        self._wake: asyncio.Future[None] | None = None
        self.sent = 0
        self.unsent = 0
        if metrics is not None:
            metrics.counter_reading(
                "heartbeats_sent_total",
                lambda: float(self.sent),
                "Heartbeat datagrams handed to the kernel.",
            )
            metrics.counter_reading(
                "heartbeats_unsent_total",
                lambda: float(self.unsent),
                "Heartbeats that could not be built or sent.",
            )

    def beat_now(self) -> None:
        """Send the next beat at once (HAProxy just loaded a config: the health service should
        see the new listeners now, not an interval later); the next one comes at the next tick
        of the schedule, as it would have."""
        if self._wake is not None:
            _settle(self._wake)
        else:
            self._early = True

    def _load_baseline(self) -> Baseline:
        if self._counters_file is None:
            return {}
        try:
            data = json.loads(self._counters_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(k): [int(x) for x in v]
            for k, v in data.items()
            if isinstance(v, list) and all(isinstance(x, int) for x in v)
        }

    def _save_baseline(self) -> None:
        """Keep the counters baseline in the state dir when it moved (an idle amphora's does
        not: no write, and no rename, which ext4 makes flush, on every beat)."""
        if self._counters_file is None or self._baseline == self._saved:
            return
        temporary = self._counters_file.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self._baseline))
            os.replace(temporary, self._counters_file)
            self._saved = self._baseline
        except OSError as exc:
            log.warning("heartbeat: cannot keep counters in %s: %s", self._counters_file, exc)

    def next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns() // 1_000_000)
        return self._seq

    async def _rows(self) -> list[StatsRow]:
        try:
            return await self._read_stats()
        except FulcrumError as exc:
            # Not running (no config pushed yet, or it died): beat with no listeners.
            log.debug("heartbeat without HAProxy stats: %s", exc)
            return []

    async def beat(self) -> bytes:
        """Build the next datagram (reads HAProxy; moves the counters baseline on)."""
        rows = await self._rows()
        amphora_id, signer, seq = self._config.amphora_id, self._signer, self.next_seq()
        extra = self._extra() if self._extra is not None else None
        cores = self._cores()
        repeat = self._repeat
        if repeat is not None and repeat.rows == rows and repeat.extra == extra:
            datagram = codec.encode_parts(amphora_id, seq, cores, repeat.rest, signer)
            if len(datagram) <= codec.MAX_DATAGRAM:
                return datagram
        previous = self._baseline
        message, baseline = build_message(amphora_id, seq, rows, previous)
        if extra is not None:
            message["listeners"].update(extra[0])
            message["pools"].update(extra[1])
        rest = codec.rest(message)
        datagram = codec.encode_parts(amphora_id, seq, cores, rest, signer)
        self._repeat = _Repeat(rows, extra, rest) if baseline == previous else None
        if len(datagram) > codec.MAX_DATAGRAM:
            log.warning(
                "heartbeat of %d bytes exceeds %d: sent without member counters",
                len(datagram),
                codec.MAX_DATAGRAM,
            )
            message, baseline = without_member_stats(message, baseline, previous)
            datagram = codec.encode_parts(amphora_id, seq, cores, codec.rest(message), signer)
            self._repeat = None
        self._baseline = baseline
        self._save_baseline()
        return datagram

    def _cores(self) -> float | None:
        """Cores of CPU HAProxy used since the previous beat (None: unknown)."""
        if self._cpu_seconds is None:
            return None
        used, now = self._cpu_seconds(), time.monotonic()
        before, self._cpu_before = self._cpu_before, None if used is None else (now, used)
        if used is None or before is None or now <= before[0] or used < before[1]:
            return None  # not running, a first reading, or a worker gone with its time
        return round((used - before[1]) / (now - before[0]), 4)

    async def run(self) -> None:
        """Beat at start, then on the event loop's beat schedule (``beat_ticks``) until
        cancelled: never more than an interval apart, and no burst after a stall."""
        loop = asyncio.get_running_loop()
        addresses = [await _resolve(loop, host, port) for host, port in self._config.endpoints]
        families = {family for family, _ in addresses}
        sockets = {family: _udp_socket(family) for family in families}
        log.info(
            "heartbeats to %s every %.2f s",
            ", ".join(f"{h}:{p}" for h, p in self._config.endpoints),
            self._config.interval,
        )
        ticks = beat_ticks(loop, self._config.interval)
        try:
            while True:
                try:
                    datagram = await self.beat()
                    family, address = addresses[self._next_endpoint % len(addresses)]
                    self._next_endpoint += 1
                    sockets[family].sendto(datagram, address)
                    self.sent += 1
                except (OSError, FulcrumError):
                    self.unsent += 1
                    log.exception("heartbeat: this beat was not sent")
                await self._until(ticks.after(loop.time()))
        finally:
            for sock in sockets.values():
                sock.close()

    async def _until(self, deadline: float) -> None:
        """Wait until ``deadline`` (loop time) or an earlier ``beat_now``."""
        if self._early:
            self._early = False
            return
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = loop.call_at(deadline, _settle, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True)
class BeatTicks:
    """Beat times ``phase + k * interval`` (loop time)."""

    phase: float
    interval: float

    def after(self, now: float) -> float:
        """The first tick later than ``now``."""
        return self.phase + (math.floor((now - self.phase) / self.interval) + 1) * self.interval


# The phase every sender of one event loop shares: the first one's start.
_PHASES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = weakref.WeakKeyDictionary()


def beat_ticks(loop: asyncio.AbstractEventLoop, interval: float) -> BeatTicks:
    """The beat schedule of the senders on ``loop`` that beat every ``interval``. All of them
    share one phase, so an agent host's amphorae beat in the same wake-up of its loop rather
    than one each; separate processes keep their own phases (a fleet does not beat in step)."""
    return BeatTicks(_PHASES.setdefault(loop, loop.time()), interval)


async def _resolve(
    loop: asyncio.AbstractEventLoop, host: str, port: int
) -> tuple[int, tuple[Any, ...]]:
    """The first address of ``host:port`` (numeric addresses resolve without DNS)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        return family, (host, port)
    except ValueError:
        pass
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise ConfigurationError(f"health endpoint {host}:{port} does not resolve")
    family, _, _, _, address = infos[0]
    return int(family), address


def _udp_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def heartbeat_ctx(
    config: HeartbeatConfig,
    read_stats: ReadStats,
    state_dir: Path,
    on_load: Callable[[Callable[[], None]], None],
    extra: ExtraReport | None = None,
    metrics: Metrics | None = None,
    cpu_seconds: Callable[[], float | None] | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that runs the sender for the agent's lifetime; ``on_load`` registers
    the sender's ``beat_now`` for every config HAProxy loads."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        sender = HeartbeatSender(config, read_stats, state_dir, extra, metrics, cpu_seconds)
        on_load(sender.beat_now)
        async with background(sender.run(), "heartbeats"):
            yield

    return ctx
