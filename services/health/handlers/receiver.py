"""The UDP heartbeat receiver: verify, de-duplicate, and hand each heartbeat on, in memory.

Per datagram, with no I/O: decode (MAC first; oversized, forged or garbled datagrams are dropped
and counted; a message that repeats its amphora's previous one but for ``seq``, as an idle
amphora's do, is not parsed again, nor rolled up again against an unchanged LB), look the
amphora up (an unknown id asks the directory for a reload, and its latest heartbeat waits for
it: an amphora booted a moment ago counts from its first beat), drop a seq not above the
highest accepted for that amphora (replays), then note the sign of life and the stats for the
batched writer, roll the statuses up against the cached LB and give the load of ACTIVE_ACTIVE
amphorae to the autoscaler. A heartbeat that shows an ACTIVE LB's amphora without all its
listeners (HAProxy gone) is no sign of life.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import time
from typing import Final

from libs.common import heartbeat_codec as codec
from libs.common.service import Metrics
from services.health.adapters.postgres import AmphoraRecord
from services.health.domain.rollup import serving
from services.health.handlers.autoscaler import Autoscaler
from services.health.handlers.directory import AmphoraDirectory
from services.health.handlers.status import StatusRecorder
from services.health.handlers.writer import HealthWriter

log = logging.getLogger(__name__)

# Datagrams read per readiness callback before yielding to the event loop.
_BATCH: Final = 512
_MAX_UDP: Final = 65536
# Rejected datagrams are logged at most once per reason per this many seconds (with a count).
_WARN_EVERY: Final = 10.0
# Heartbeats of unknown amphorae kept for the directory's next reload (the latest per id).
_MAX_WAITING: Final = 4096


class HeartbeatIntake:
    """Everything done with one datagram; ``handle`` never raises."""

    def __init__(
        self,
        key: str,
        directory: AmphoraDirectory,
        writer: HealthWriter,
        status: StatusRecorder,
        metrics: Metrics,
        *,
        max_datagram: int = codec.MAX_DATAGRAM,
        autoscaler: Autoscaler | None = None,
    ) -> None:
        self._autoscaler = autoscaler
        self._decoder = codec.RepeatDecoder(key.encode(), max_datagram)
        self._directory = directory
        self._writer = writer
        self._status = status
        self._metrics = metrics
        self._seqs: dict[str, int] = {}
        self._warned: dict[str, tuple[float, int]] = {}
        self._waiting: dict[str, codec.Beat] = {}
        self.receiving_since = time.monotonic()
        # Counted here, read at scrape time: a Prometheus counter's inc (its lock) per datagram
        # cost more than the rest of an idle heartbeat's bookkeeping.
        self.received = 0
        self.accepted = 0
        metrics.counter_reading(
            "heartbeats_received_total", lambda: float(self.received), "Datagrams received."
        )
        metrics.counter_reading(
            "heartbeats_accepted_total",
            lambda: float(self.accepted),
            "Heartbeats accepted (authentic, from a known amphora, seq above the last).",
        )
        directory.on_prune(self._forget_gone)
        directory.on_reload(self._retry_waiting)

    def handle(self, datagram: bytes) -> None:
        self.received += 1
        try:
            self._accept(datagram)
        except codec.HeartbeatRejected as exc:
            self._metrics.inc(f"heartbeats_dropped_{exc.reason}_total")
            self._warn(exc.reason, str(exc))
        except Exception:
            self._failed()

    def _failed(self) -> None:
        """Count and log the exception being handled (a bug: the receiver never stops)."""
        self._metrics.inc("heartbeats_failed_total")
        log.exception("health: a heartbeat could not be processed")

    def _accept(self, datagram: bytes) -> None:
        beat = self._decoder.decode(datagram)
        heartbeat = beat.heartbeat
        record = self._directory.get(heartbeat.id)
        if record is None:
            self._metrics.inc("heartbeats_unknown_amphora_total")
            self._wait_for_reload(beat)
            return
        if record.lb_id is None and (heartbeat.listeners or heartbeat.pools):
            # A spare allocated since the last reload: its statuses and traffic deltas belong
            # to an LB only the reload names (the agent has moved its counters past them).
            self._wait_for_reload(beat)
            return
        self._take(beat, record)

    def _wait_for_reload(self, beat: codec.Beat) -> None:
        """Keep the amphora's latest heartbeat for the early directory reload this asks for."""
        amphora_id = beat.heartbeat.id
        if amphora_id in self._waiting or len(self._waiting) < _MAX_WAITING:
            self._waiting[amphora_id] = beat
        self._directory.missed(amphora_id)

    def _retry_waiting(self, records: dict[str, AmphoraRecord]) -> None:
        """After a directory reload: take the waiting heartbeats of amphorae now known (one
        still a spare is taken as one); the others (stray senders) are dropped."""
        waiting, self._waiting = self._waiting, {}
        for amphora_id, beat in waiting.items():
            record = records.get(amphora_id)
            if record is not None:
                try:
                    self._take(beat, record)
                except Exception:
                    self._failed()

    def _take(self, beat: codec.Beat, record: AmphoraRecord) -> None:
        heartbeat, seq, content = beat.heartbeat, beat.seq, beat.content
        metrics = self._metrics
        amphora_id = heartbeat.id
        last = max(self._seqs.get(amphora_id, 0), record.seq)
        if seq <= last:
            metrics.inc("heartbeats_dropped_replayed_total")
            self._warn("replayed", f"amphora {amphora_id} seq {seq} <= {last}")
            return
        self._seqs[amphora_id] = seq
        now = time.monotonic()
        lb_id = record.lb_id
        view = None
        if lb_id is not None:
            view = self._status.observe(lb_id, heartbeat, now, content)
            if self._autoscaler is not None:
                self._autoscaler.observe(view, heartbeat, beat.cpu, now)
            if heartbeat.listeners or heartbeat.pools:
                self._writer.add_stats(lb_id, amphora_id, heartbeat, content)
        if view is None or serving(view, amphora_id, heartbeat):
            self._writer.seen(amphora_id, seq, now)
        else:
            metrics.inc("heartbeats_not_serving_total")
        self.accepted += 1

    def _warn(self, reason: str, detail: str) -> None:
        now = time.monotonic()
        since, count = self._warned.get(reason, (0.0, 0))
        if now - since < _WARN_EVERY:
            self._warned[reason] = (since, count + 1)
            return
        self._warned[reason] = (now, 0)
        suffix = f" ({count} more since the last report)" if count else ""
        log.warning("health: heartbeat dropped (%s): %s%s", reason, detail, suffix)

    def _forget_gone(self, records: dict[str, AmphoraRecord]) -> None:
        for amphora_id in [a for a in self._seqs if a not in records]:
            del self._seqs[amphora_id]
        self._decoder.forget_others(records)
        self._status.forget_amphorae_except(records)


class UdpReceiver:
    """Reads datagrams off a bound non-blocking socket into ``intake.handle``, in batches.

    Not an asyncio DatagramProtocol: its transport reads one datagram per event-loop turn,
    which measured at 10-25k datagrams/s on this box even with an empty handler. Here, once a
    datagram is ready, the receiver lets more gather in the socket's buffer for ``gather``
    seconds, then drains them in one callback (up to ``_BATCH``, then it yields to the loop so
    the writers and the scanner keep running under a flood, and goes on at once). A fleet's
    heartbeats arrive spread over each interval: reading each as it comes woke the process
    once per datagram, which cost more CPU than handling it (~65 of ~90 us per datagram,
    measured); with ``gather`` the process wakes at most once per ``gather`` seconds whatever
    the fleet's size, and a heartbeat is handled at most ``gather`` seconds late. ``gather``
    0 reads each datagram as soon as it is ready.
    """

    def __init__(
        self, sock: socket.socket, intake: HeartbeatIntake, max_datagram: int, gather: float = 0.0
    ) -> None:
        self._sock = sock
        self._intake = intake
        # One byte more than allowed, so an oversized datagram is seen as such, not cut.
        self._bufsize = min(max_datagram + 1, _MAX_UDP)
        self._gather = gather
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.Handle | None = None
        self.wakeups = 0  # drains run (batches read)
        self._emptied_at = 0.0  # monotonic time of the last read that found the socket empty

    def caught_up(self, since: float) -> bool:
        """Whether every datagram that arrived before ``since`` (monotonic) has been handled:
        a read found the socket empty after ``since``, or nothing waits in it now."""
        if self._emptied_at >= since:
            return True
        readable, _, _ = select.select([self._sock], [], [], 0)
        return not readable

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._ready)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        self._sock.close()

    def _ready(self) -> None:
        """A datagram is ready: read now, or stop watching and read after ``gather``."""
        loop = self._loop
        if loop is None:
            return
        if self._gather <= 0:
            self._drain()
            return
        loop.remove_reader(self._sock.fileno())
        self._timer = loop.call_later(self._gather, self._drain_gathered)

    def _drain_gathered(self) -> None:
        """Read what gathered; watch the socket again, or go on at once if a batch was full."""
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        if self._drain():
            self._timer = loop.call_soon(self._drain_gathered)
        else:
            loop.add_reader(self._sock.fileno(), self._ready)

    def _drain(self) -> bool:
        """Read up to ``_BATCH`` datagrams; True when the batch was full (more may wait)."""
        self.wakeups += 1
        recv, handle = self._sock.recv, self._intake.handle
        for _ in range(_BATCH):
            try:
                datagram = recv(self._bufsize)
            except (BlockingIOError, InterruptedError):
                self._emptied_at = time.monotonic()
                return False
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                log.warning("health: UDP receive error: %s", exc)
                return False
            handle(datagram)
        return True


def bind_udp(host: str, port: int, receive_buffer: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` with a larger kernel receive buffer."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
