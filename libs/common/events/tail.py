"""``fulcrum events tail``: follow the event stream live, from any position, as JSON lines.

It uses an ephemeral ordered consumer, so it never disturbs the services' durable consumers.
It fails fast: NATS unreachable, no stream, or a connection lost for longer than the
reconnect window each print one line on stderr and exit with status 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from libs.common import subjects
from libs.common.bus import connect_options, credentials_refused
from libs.common.errors import ConfigurationError, InfrastructureError
from libs.common.settings import DEFAULT_NATS_URL, NatsSettings

log = logging.getLogger(__name__)

PROG: Final = "fulcrum events tail"
EXIT_UNAVAILABLE: Final = 2
_POLL_INTERVAL: Final = 0.5  # how often the loop looks at the connection while idle
_RECONNECT_WAIT: Final = 1  # seconds between reconnect attempts (nats-py types it int)
_API_TIMEOUT: Final = 2.0  # per JetStream API request


@dataclass(frozen=True)
class TailOptions:
    """What to follow, from where, and how long (seconds) to wait for NATS.

    ``nats_url`` may name several servers (comma-separated). Unset connection fields come
    from ``FULCRUM_NATS_<FIELD>`` (``FULCRUM_NATS_URL``, ``FULCRUM_NATS_PASSWORD`` ...), then
    from the state dir's ``nats.url``, ``nats.user``, ``nats.password`` and ``nats.ca`` (the
    path of the CA verifying the servers) files.
    """

    nats_url: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    state_dir: str = ".state"
    subjects: list[str] = field(default_factory=list)
    from_start: bool = False
    from_seq: int | None = None
    last: int | None = None
    count: int | None = None
    connect_timeout: float = 3.0
    reconnect_window: float = 10.0


class TailUnavailable(InfrastructureError):
    """NATS or the stream is not there; the message says so in one line."""


def _resolve_settings(options: TailOptions) -> NatsSettings:
    """The connection settings: each from the option, else ``FULCRUM_NATS_<FIELD>``, else
    (URL, user/password and CA only) the state dir's file; raises TailUnavailable when they
    contradict each other (two kinds of credentials, a user without password ...)."""
    state = Path(options.state_dir)

    def pick(name: str, given: str | None, state_file: str | None = None) -> str:
        if given:
            return given
        from_env = os.environ.get(f"FULCRUM_NATS_{name.upper()}")
        if from_env:
            return from_env
        if state_file is not None and (state / state_file).exists():
            return (state / state_file).read_text().strip()
        return ""

    url = pick("url", options.nats_url, "nats.url") or DEFAULT_NATS_URL
    values = {
        "user": pick("user", options.user, "nats.user"),
        "password": pick("password", options.password, "nats.password"),
        "token": pick("token", options.token),
        "creds_file": pick("creds_file", options.creds_file),
        "tls_ca_file": pick("tls_ca_file", options.tls_ca_file, "nats.ca"),
        "tls_cert_file": pick("tls_cert_file", options.tls_cert_file),
        "tls_key_file": pick("tls_key_file", options.tls_key_file),
    }
    try:
        return NatsSettings(url=url, **values)
    except ValueError as exc:
        raise TailUnavailable(f"unusable NATS settings: {exc}") from exc


def _shown(servers: list[str]) -> str:
    """The server URLs without their passwords, for messages."""
    shown = []
    for url in servers:
        parts = urlsplit(url)
        if parts.password is not None:
            netloc = f"{parts.username}:***@{parts.hostname}"
            if parts.port is not None:
                netloc += f":{parts.port}"
            url = urlunsplit(parts._replace(netloc=netloc))
        shown.append(url)
    return ",".join(shown)


def _deliver(options: TailOptions, last_seq: int) -> tuple[api.DeliverPolicy, int | None]:
    if options.from_start:
        return api.DeliverPolicy.ALL, None
    if options.from_seq is not None:
        return api.DeliverPolicy.BY_START_SEQUENCE, options.from_seq
    if options.last is not None:
        return api.DeliverPolicy.BY_START_SEQUENCE, max(1, last_seq - options.last + 1)
    return api.DeliverPolicy.NEW, None


class _Link:
    """The connection's state as nats-py reports it through its callbacks.

    nats-py hands every failed (re)connect attempt to ``error_cb``, whose default logs a
    traceback each time; here errors are only logged at DEBUG and the loop decides.
    """

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.closed = False
        self.reconnected = False  # the tail has not resubscribed since the reconnect yet
        self.refused = False  # a server refused the credentials

    async def on_error(self, exc: Exception) -> None:
        log.debug("nats: %r", exc)
        self.refused = self.refused or credentials_refused(exc)

    async def on_disconnected(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()

    async def on_reconnected(self) -> None:
        self.reconnected = True

    def recovered(self) -> None:
        """The tail follows the stream again: the outage is over."""
        self.reconnected = False
        self.down_since = None

    async def on_closed(self) -> None:
        self.closed = True

    def lost_for(self, window: float) -> bool:
        """True once the client gave up or has been disconnected longer than ``window``."""
        if self.closed:
            return True
        return self.down_since is not None and time.monotonic() - self.down_since > window


async def _connect(settings: NatsSettings, options: TailOptions, link: _Link) -> NatsClient:
    """Connect within ``connect_timeout`` (retrying inside it); raises TailUnavailable."""
    nc = NatsClient()
    try:
        connection = connect_options(settings)
    except ConfigurationError as exc:
        raise TailUnavailable(str(exc)) from exc
    try:
        await asyncio.wait_for(
            nc.connect(
                **connection,
                name="fulcrum-events-tail",
                connect_timeout=max(1, math.ceil(options.connect_timeout)),
                reconnect_time_wait=_RECONNECT_WAIT,
                max_reconnect_attempts=_attempts_within(options.connect_timeout),
                error_cb=link.on_error,
                disconnected_cb=link.on_disconnected,
                reconnected_cb=link.on_reconnected,
                closed_cb=link.on_closed,
            ),
            timeout=options.connect_timeout,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await _close_quietly(nc)
        servers = _shown(settings.servers)
        if link.refused:
            raise TailUnavailable(f"NATS at {servers} refused the credentials") from exc
        raise TailUnavailable(
            f"cannot reach NATS at {servers} within {options.connect_timeout:g} s"
        ) from exc
    # From now on an outage may last reconnect_window; the tail loop enforces it.
    nc.options["max_reconnect_attempts"] = _attempts_within(options.reconnect_window)
    return nc


def _attempts_within(seconds: float) -> int:
    """A reconnect budget that runs out after about ``seconds``.

    nats-py's retry loops must end on their own: a cancellation that lands just as an
    attempt fails is swallowed in them (asyncio.wait_for, Python 3.11), so an endless loop
    (-1) could outlive wait_for's timeout or close() and hang the exit. The exact time bounds
    are wait_for's and the tail loop's; this one only caps the worst case.
    """
    return math.ceil(seconds / _RECONNECT_WAIT) + 1


async def _close_quietly(nc: NatsClient) -> None:
    try:
        await nc.close()
    except (OSError, nats.errors.Error) as exc:
        log.debug("nats: close failed: %r", exc)


async def tail_events(options: TailOptions) -> int:
    """Print each event as one JSON line (with its stream sequence); returns an exit code.

    0 after ``count`` events or on Ctrl-C; 2 (one line on stderr) when NATS cannot be
    reached within ``connect_timeout``, the stream is missing, or the connection is lost
    for longer than ``reconnect_window``.
    """
    try:
        return await _tail(_resolve_settings(options), options)
    except TailUnavailable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    except asyncio.CancelledError:
        return 0


async def _tail(settings: NatsSettings, options: TailOptions) -> int:
    link = _Link()
    nc = await _connect(settings, options, link)
    shown = _shown(settings.servers)
    lost = f"lost the connection to NATS at {shown}; not back within {options.reconnect_window:g} s"
    try:
        js = nc.jetstream(timeout=_API_TIMEOUT)
        try:
            info = await js.stream_info(subjects.STREAM_NAME)
        except nats.js.errors.NotFoundError as exc:
            raise TailUnavailable(
                f"no stream {subjects.STREAM_NAME} on NATS at {shown} (is the stack up?)"
            ) from exc
        except (TimeoutError, nats.errors.Error) as exc:
            raise TailUnavailable(
                f"cannot read stream {subjects.STREAM_NAME} on NATS at {shown}: {exc}"
            ) from exc
        policy, start = _deliver(options, info.state.last_seq)
        # The first stream sequence not printed yet: where a resubscription starts.
        next_seq = start if start is not None else 1
        if policy == api.DeliverPolicy.NEW:
            next_seq = info.state.last_seq + 1
        try:
            sub = await _subscribe(js, options, policy, start)
        except (TimeoutError, nats.errors.Error) as exc:
            raise TailUnavailable(f"cannot subscribe on NATS at {shown}: {exc}") from exc
        seen = 0
        while options.count is None or seen < options.count:
            if link.lost_for(options.reconnect_window):
                raise TailUnavailable(lost)
            if link.reconnected:
                sub = await _resubscribe(js, sub, options, next_seq, link)
            try:
                msg = await sub.next_msg(timeout=_POLL_INTERVAL)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.ConnectionClosedError as exc:
                raise TailUnavailable(lost) from exc
            sequence = msg.metadata.sequence.stream
            if sequence < next_seq:
                continue  # printed already, before a resubscription
            print(json.dumps(_as_line(msg, sequence)), flush=True)
            next_seq = sequence + 1
            seen += 1
        return 0
    finally:
        await _close_quietly(nc)


async def _subscribe(
    js: JetStreamContext, options: TailOptions, policy: api.DeliverPolicy, start: int | None
) -> JetStreamContext.PushSubscription:
    config = api.ConsumerConfig(
        deliver_policy=policy,
        opt_start_seq=start,
        filter_subjects=options.subjects or [subjects.ALL_EVENTS],
    )
    return await js.subscribe("", stream=subjects.STREAM_NAME, ordered_consumer=True, config=config)


async def _resubscribe(
    js: JetStreamContext,
    old: JetStreamContext.PushSubscription,
    options: TailOptions,
    next_seq: int,
    link: _Link,
) -> JetStreamContext.PushSubscription:
    """A new ordered consumer from ``next_seq`` after a reconnect, since a restarted server
    may have dropped the ephemeral one (nats-py notices only after missed heartbeats). On
    failure (JetStream still recovering) the old one is kept and the next poll retries."""
    try:
        sub = await _subscribe(js, options, api.DeliverPolicy.BY_START_SEQUENCE, next_seq)
    except (TimeoutError, nats.errors.Error) as exc:
        log.debug("resubscribe failed, retrying: %r", exc)
        return old
    try:
        await old.unsubscribe()
    except nats.errors.Error as exc:
        log.debug("unsubscribe of the old consumer failed: %r", exc)
    link.recovered()
    return sub


def _as_line(msg: Msg, sequence: int) -> dict[str, Any]:
    """The event body plus its stream sequence; a body that is not a JSON object (a poison
    message) is shown raw instead of stopping the tail."""
    try:
        body = json.loads(msg.data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"subject": msg.subject, "undecodable": msg.data.decode("utf-8", "replace")}
    body["stream_sequence"] = sequence
    return body
