"""The JetStream bus: the stream, publishing with dedup headers, and idempotent pull consumers.

A consumer handles each event at most once in effect: it inserts ``processed_messages`` in the
same transaction as its effects, commits, then acks. Undecodable or unknown events and events
that exhaust ``max_deliver`` go to ``dead_letters`` with a clear log line and are terminated,
so they never block the stream. Events of one stream are handled in order; different streams
run concurrently up to ``concurrency``. A database outage is no failure of the message: it is
waited out in place and costs no delivery (``ConsumerRunner._until_database_answers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar

import asyncpg
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from opentelemetry import trace

from libs.common import subjects
from libs.common._postgres_outage import database_unavailable
from libs.common.errors import ConfigurationError, InfrastructureError, TransientError
from libs.common.events import Envelope, UnknownEventType, UnsupportedSchemaVersion
from libs.common.logsetup import log_context
from libs.common.settings import NatsSettings
from libs.common.telemetry import context_from_traceparent, tracer

log = logging.getLogger(__name__)

# While the database is unavailable, a message's handling is retried at most this far apart.
DATABASE_RETRY_CAP: Final = 2.0
# Seconds an idle consumer's pull request waits on the server for a first message. A message
# that arrives meanwhile is handed over at once, so this only sets how often an idle consumer
# asks again (each ask is a no-wait probe and a waiting request, both answered with a status
# message): 5 s costs a fifth of what 1 s did. A request the server lost with its connection
# is not waited out: the fetch ends when the connection is restored (``Reconnects``).
FETCH_LINGER: Final = 5.0


class Header(StrEnum):
    """NATS headers Fulcrum sets: the only place their names are spelled."""

    MSG_ID = "Nats-Msg-Id"
    TRACEPARENT = "traceparent"


class Reconnects:
    """News of a NATS connection restored (``connect(..., reconnects=)``): ``next()`` is a
    future done at the next reconnect, shared by every caller until then."""

    def __init__(self) -> None:
        self._next: asyncio.Future[None] | None = None

    def next(self) -> asyncio.Future[None]:
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()
        return self._next

    def restored(self) -> None:
        if self._next is not None and not self._next.done():
            self._next.set_result(None)


class _ConnectionLog:
    """nats-py's connection callbacks as a few log lines: one when the connection drops, one
    when it is back, and a failed reconnect at most every ``quiet`` seconds (nats-py's default
    logs a traceback for each attempt, twice a second); ``reconnects`` hears of each return."""

    def __init__(self, url: str, quiet: float = 10.0, reconnects: Reconnects | None = None) -> None:
        self._url = url
        self._reconnects = reconnects
        self.client: NatsClient | None = None  # set once connected
        self._quiet = quiet
        self._last_error = 0.0

    async def error(self, exc: Exception) -> None:
        if self.client is None and credentials_refused(exc):
            raise exc  # wrong credentials: no retry can help, so the first connect fails
        if permission_refused(exc):
            log.error("NATS at %s refused this user: %s", self._url, exc)
            return
        now = asyncio.get_running_loop().time()
        if now - self._last_error >= self._quiet:
            self._last_error = now
            log.warning("NATS at %s: %s (retrying every 0.5 s)", self._url, exc or repr(exc))

    async def disconnected(self) -> None:
        if self.client is not None and self.client.is_closed:
            return  # closed on purpose
        log.warning("NATS at %s: connection lost; reconnecting", self._url)

    async def reconnected(self) -> None:
        self._last_error = 0.0
        log.info("NATS at %s: connection restored", self._url)
        if self._reconnects is not None:
            self._reconnects.restored()


def credentials_refused(exc: Exception) -> bool:
    """The server refused the credentials (nats-py reports it as a plain ``Error`` too)."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower()
    )


def permission_refused(exc: Exception) -> bool:
    """The server refused a publish or subscription this user has no permission for (the
    publish itself gets no answer: its request times out)."""
    return isinstance(exc, nats.errors.Error) and "permissions violation" in str(exc).lower()


def tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    """The client's TLS context (None: plain TCP): the servers verified against
    ``tls_ca_file`` (the system's CAs without it), ``tls_cert_file``/``tls_key_file`` presented
    when given. Raises ConfigurationError when a file cannot be loaded."""
    if not settings.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
        if settings.tls_cert_file:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"NATS TLS files unusable: {exc}") from exc
    return context


def connect_options(settings: NatsSettings) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for the servers, credentials and TLS of
    ``settings`` (the caller adds name, callbacks and reconnect policy)."""
    options: dict[str, Any] = {"servers": list(settings.servers)}
    if settings.user:
        options["user"], options["password"] = settings.user, settings.password
    if settings.token:
        options["token"] = settings.token
    if settings.creds_file:
        options["user_credentials"] = settings.creds_file
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    return options


async def connect(
    settings: NatsSettings, name: str, reconnects: Reconnects | None = None
) -> NatsClient:
    """Connect to any of ``settings.servers``, reconnecting forever (to any of them, and to
    cluster members the servers announce) in the background once connected, telling
    ``reconnects`` of each. Until the first connection, unreachable servers are retried;
    refused credentials raise InfrastructureError at once."""
    callbacks = _ConnectionLog(settings.url, reconnects=reconnects)
    nc = NatsClient()
    try:
        await nc.connect(
            **connect_options(settings),
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # typed int, slept as given
            connect_timeout=5,
            error_cb=callbacks.error,
            disconnected_cb=callbacks.disconnected,
            reconnected_cb=callbacks.reconnected,
        )
    except (OSError, nats.errors.Error) as exc:
        with contextlib.suppress(OSError, nats.errors.Error):
            await nc.close()
        if credentials_refused(exc):
            who = f"user {settings.user!r}" if settings.user else "these credentials"
            raise InfrastructureError(f"NATS at {settings.url} refused {who}: {exc}") from exc
        raise InfrastructureError(f"cannot reach NATS at {settings.url}: {exc}") from exc
    callbacks.client = nc
    return nc


async def ensure_stream(js: JetStreamContext, settings: NatsSettings) -> None:
    """Create ``FULCRUM_EVENTS`` or bring its config up to date (idempotent)."""
    config = api.StreamConfig(
        name=settings.stream,
        subjects=[subjects.ALL_EVENTS],
        storage=api.StorageType.FILE,
        retention=api.RetentionPolicy.LIMITS,
        duplicate_window=settings.duplicate_window,
        max_age=settings.max_age_days * 86400,
        num_replicas=settings.replicas,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)


@dataclass(frozen=True)
class Published:
    stream_sequence: int
    duplicate: bool


class JetStreamPublisher:
    """Publishes stored events; ``Nats-Msg-Id`` = event_id lets the server drop republishes."""

    def __init__(self, js: JetStreamContext, settings: NatsSettings) -> None:
        self._js = js
        self._settings = settings

    async def publish(
        self, subject: str, body: bytes, event_id: str, traceparent: str | None = None
    ) -> Published:
        """Publish and await the PubAck; raises TransientError when NATS cannot take it."""
        headers = {Header.MSG_ID.value: event_id}
        if traceparent:
            headers[Header.TRACEPARENT.value] = traceparent
        with tracer(__name__).start_as_current_span(
            "publish", context=context_from_traceparent(traceparent)
        ):
            try:
                ack = await self._js.publish(
                    subject, body, headers=headers, stream=self._settings.stream, timeout=2.0
                )
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                raise TransientError(f"publish to {subject} failed: {exc!r}") from exc
        return Published(stream_sequence=ack.seq, duplicate=bool(ack.duplicate))


Handler = Callable[[Envelope, asyncpg.Connection], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer ``<service>-<purpose>`` over some subjects.

    ``acked_unhandled``: event types among those subjects that can ask nothing of the handler;
    they are acknowledged as they arrive, without being decoded, a transaction or a
    ``processed_messages`` row.

    ``work_lock``: the key (or None) of a transaction-level advisory lock that the handler
    must hold while it runs, for an event; it is taken in the statement that writes the
    ``processed_messages`` row (one round trip for both) and held until the transaction ends.
    """

    name: str
    filter_subjects: Sequence[str]
    handler: Handler
    concurrency: int = 8
    batch: int = 64
    nak_delay: float = 0.5
    deliver_new_only: bool = False
    acked_unhandled: frozenset[str] = frozenset()
    work_lock: Callable[[Envelope], str | None] | None = None


_PROCESSED_SQL: Final = (
    "INSERT INTO processed_messages (consumer, event_id) VALUES ($1, $2) "
    "ON CONFLICT DO NOTHING RETURNING true"
)
# The row and a work lock in one statement: the lock is held once it ends, and what the handler
# reads afterwards (a statement of its own) sees every write the lock waited for.
_PROCESSED_LOCKED_SQL: Final = (
    f"WITH done AS ({_PROCESSED_SQL}), "
    "locked AS (SELECT pg_advisory_xact_lock(hashtextextended($3, 0))) "
    "SELECT (SELECT * FROM done) FROM locked"
)


class ConsumerRunner:
    """Runs one durable consumer until cancelled; never lets an error kill the loop.

    An idle consumer asks for messages every ``linger`` s (``FETCH_LINGER``); ``reconnects``
    (those of ``js``'s connection) ends a wait at once when the connection is restored, since
    the server may have lost the waiting request with it. Without ``reconnects`` a consumer
    resumes within ``linger`` s of a reconnect."""

    def __init__(
        self,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        spec: ConsumerSpec,
        settings: NatsSettings,
        *,
        reconnects: Reconnects | None = None,
        linger: float = FETCH_LINGER,
    ) -> None:
        self._js = js
        self._reconnects = reconnects
        self._linger = linger
        self._pool = pool
        self._spec = spec
        self._settings = settings
        self._slots = asyncio.Semaphore(spec.concurrency)
        # Messages fetched and not yet handled, at most (JetStream redelivers if we die).
        self._room = asyncio.Semaphore(spec.batch * 2)
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._attached = False
        self._last_error: str | None = None
        # Called with every fetched message before dispatch (libs/common/consumer_metrics.py).
        self.on_fetched: Callable[[Msg], None] | None = None

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def attached(self) -> bool:
        """True while the pull subscription is bound and no fetch loop iteration has failed
        since (a fetch that finds nothing is no failure)."""
        return self._attached

    @property
    def last_error(self) -> str | None:
        """Why the fetch loop last failed; None until it does, and again once re-bound."""
        return self._last_error

    async def info(self) -> api.ConsumerInfo:
        """JetStream's view of this durable consumer (pending, redelivered, ack pending)."""
        info: api.ConsumerInfo = await self._js.consumer_info(
            self._settings.stream, self._spec.name
        )
        return info

    async def ensure_consumer(self) -> None:
        config = api.ConsumerConfig(
            durable_name=self._spec.name,
            filter_subjects=list(self._spec.filter_subjects),
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.NEW
            if self._spec.deliver_new_only
            else api.DeliverPolicy.ALL,
            max_deliver=self._settings.max_deliver,
            ack_wait=self._settings.ack_wait,
            max_ack_pending=1000,
        )
        await self._js.add_consumer(self._settings.stream, config)

    async def run(self) -> None:
        """Fetch and dispatch forever; reconnects and backs off on bus errors.

        Fetching never waits for handlers: each message joins the chain of its event stream
        (handled in order), chains run concurrently up to ``concurrency``.
        """
        backoff = 0.2
        sub: JetStreamContext.PullSubscription | None = None
        try:
            while True:
                try:
                    if sub is None:
                        await self.ensure_consumer()
                        sub = await self._js.pull_subscribe_bind(
                            durable=self._spec.name, stream=self._settings.stream
                        )
                        self._attached, self._last_error = True, None
                    await self._room.acquire()  # bound what is fetched but not yet handled
                    self._room.release()
                    try:
                        msgs = await self._fetch(sub)
                    except (nats.errors.TimeoutError, TimeoutError):
                        continue  # nothing to do for now
                    backoff = 0.2
                    for msg in msgs:
                        await self._dispatch(msg)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.exception("consumer %s: fetch loop failed; retrying", self._spec.name)
                    sub = None
                    self._attached = False
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self._attached = False
            chains = list(self._chains.values())
            for task in chains:
                task.cancel()
            await asyncio.gather(*chains, return_exceptions=True)

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next batch, once a first message is there; raises TimeoutError after ``linger``
        s without one, or at once when the connection is restored meanwhile and nothing reached
        the subscription since the fetch began. A fetch that may hold messages is never
        cancelled (they would come again only after ack_wait, out of their stream's order): it
        ends on its own."""
        if self._reconnects is None:
            msgs: list[Msg] = await sub.fetch(self._spec.batch, timeout=self._linger)
            return msgs
        restored = self._reconnects.next()
        delivered = sub.delivered  # an idle request's wait delivers nothing, status or message
        fetching = asyncio.ensure_future(sub.fetch(self._spec.batch, timeout=self._linger))
        try:
            await asyncio.wait((fetching, restored), return_when=asyncio.FIRST_COMPLETED)
            if not fetching.done() and sub.delivered != delivered:
                await asyncio.wait((fetching,))
        finally:
            if not fetching.done():
                fetching.cancel()
                with contextlib.suppress(asyncio.CancelledError, nats.errors.Error):
                    await fetching
        if fetching.cancelled():
            raise TimeoutError("connection restored: asking again")
        return fetching.result()

    async def _dispatch(self, msg: Msg) -> None:
        if self.on_fetched is not None:
            self.on_fetched(msg)
        if subjects.event_type_of(msg.subject) in self._spec.acked_unhandled:
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()
            return
        await self._room.acquire()
        key = _stream_key(msg)
        task = asyncio.create_task(self._after(self._chains.get(key), msg))
        self._chains[key] = task

        def done(finished: asyncio.Task[None], key: str = key) -> None:
            self._room.release()
            if self._chains.get(key) is finished:
                del self._chains[key]

        task.add_done_callback(done)

    async def _after(self, previous: asyncio.Task[None] | None, msg: Msg) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        async with self._slots:
            await self._handle_one(msg)

    async def _handle_one(self, msg: Msg) -> None:
        # In progress all along, through a database outage too: JetStream neither redelivers
        # the message meanwhile nor counts a delivery.
        keepalive = asyncio.create_task(self._keep_in_progress(msg))
        try:
            await self._decode_and_apply(msg)
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _decode_and_apply(self, msg: Msg) -> None:
        name = self._spec.name
        try:
            body = json.loads(msg.data)
            envelope = Envelope.from_wire(body)
        except (ValueError, KeyError, TypeError, UnknownEventType, UnsupportedSchemaVersion) as exc:
            await self._dead_letter(msg, None, f"undecodable event: {exc!r}")
            return
        ctx = context_from_traceparent(envelope.metadata.traceparent)
        span_name = f"consume {envelope.event_type}"
        ids = {"correlation_id": envelope.metadata.correlation_id or str(envelope.event_id)}
        if envelope.category in ("loadbalancer", "amphora"):
            ids["lb_id" if envelope.category == "loadbalancer" else "amphora_id"] = (
                envelope.aggregate_id
            )
        try:
            with (
                log_context(**ids),
                tracer(__name__).start_as_current_span(span_name, context=ctx) as span,
            ):
                span.set_attribute("fulcrum.consumer", name)
                span.set_attribute("fulcrum.event_id", str(envelope.event_id))
                handled = await self._until_database_answers(
                    lambda: self._apply(envelope), f"event_id={envelope.event_id}"
                )
            await msg.ack()
            if not handled:
                log.debug("consumer %s: %s already processed", name, envelope.event_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._on_failure(msg, envelope, exc)

    async def _until_database_answers(self, attempt: Callable[[], Awaitable[T]], what: str) -> T:
        """``attempt()``, retried in place while the database is unavailable, backing off from
        ``nak_delay`` to ``DATABASE_RETRY_CAP`` seconds; any other error is raised.

        Waiting in place rather than naking: a nak spends one of ``max_deliver`` deliveries,
        so an outage longer than the naks' delays would give up on (dead-letter, or strand at
        ``max_deliver``) messages that were never at fault. Meanwhile ``_keep_in_progress``
        holds off ``ack_wait``; if this process dies, JetStream redelivers as usual.
        """
        delay = self._spec.nak_delay
        waited = False
        while True:
            try:
                result = await attempt()
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                if not waited:
                    log.warning(
                        "consumer %s: database unavailable (%s: %r); waiting for it",
                        self._spec.name,
                        what,
                        exc,
                    )
                waited = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, DATABASE_RETRY_CAP)
                continue
            if waited:
                log.info("consumer %s: database back (%s)", self._spec.name, what)
            return result

    async def _apply(self, envelope: Envelope) -> bool:
        lock = self._spec.work_lock(envelope) if self._spec.work_lock is not None else None
        async with self._pool.acquire() as conn, conn.transaction():
            if lock is None:
                inserted = await conn.fetchval(_PROCESSED_SQL, self._spec.name, envelope.event_id)
            else:
                inserted = await conn.fetchval(
                    _PROCESSED_LOCKED_SQL, self._spec.name, envelope.event_id, lock
                )
            if not inserted:
                return False
            await self._spec.handler(envelope, conn)
            return True

    async def _on_failure(self, msg: Msg, envelope: Envelope, exc: Exception) -> None:
        delivered = msg.metadata.num_delivered or 1
        context = (
            f"consumer={self._spec.name} event_id={envelope.event_id} "
            f"stream={envelope.stream_id} correlation_id={envelope.metadata.correlation_id}"
        )
        if delivered >= self._settings.max_deliver:
            log.error("%s: giving up after %d deliveries: %r", context, delivered, exc)
            await self._dead_letter(msg, str(envelope.event_id), f"gave up: {exc!r}")
            return
        if isinstance(exc, TransientError):
            log.warning("%s: transient failure (delivery %d): %s", context, delivered, exc)
        else:
            log.exception("%s: handler failed (delivery %d)", context, delivered)
        trace.get_current_span().record_exception(exc)
        with contextlib.suppress(nats.errors.Error):
            await msg.nak(delay=self._spec.nak_delay * delivered)

    async def _dead_letter(self, msg: Msg, event_id: str | None, reason: str) -> None:
        """Record the message in ``dead_letters`` (waiting out a database outage), then term it.

        Never raises but CancelledError: a row that cannot be written is logged with the
        message's stream sequence, where the body stays until the stream's ``max_age``.
        """
        log.error(
            "consumer %s: dead-lettered message on %s (event_id=%s): %s",
            self._spec.name,
            msg.subject,
            event_id,
            reason,
        )
        try:
            await self._until_database_answers(
                lambda: self._pool.execute(
                    "INSERT INTO dead_letters (consumer, subject, event_id, reason, body) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    self._spec.name,
                    msg.subject,
                    event_id,
                    reason,
                    msg.data.decode("utf-8", errors="replace"),
                ),
                f"dead letter of event_id={event_id}",
            )
        except Exception:
            log.exception(
                "consumer %s: dead letter row not written (subject %s, stream sequence %s)",
                self._spec.name,
                msg.subject,
                msg.metadata.sequence.stream,
            )
        with contextlib.suppress(nats.errors.Error):
            await msg.term()

    async def _keep_in_progress(self, msg: Msg) -> None:
        """Tell JetStream the message is still being worked on during long handlers."""
        interval = max(self._settings.ack_wait / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(nats.errors.Error):
                await msg.in_progress()


def _stream_key(msg: Msg) -> str:
    # fulcrum.events.<category>.<id>.<EventType>: category+id name the event stream.
    parts = msg.subject.split(".")
    return ".".join(parts[2:4]) if len(parts) >= 5 else msg.subject


__all__ = [
    "FETCH_LINGER",
    "ConsumerRunner",
    "ConsumerSpec",
    "Handler",
    "Header",
    "JetStreamPublisher",
    "Published",
    "Reconnects",
    "connect",
    "connect_options",
    "credentials_refused",
    "ensure_stream",
    "permission_refused",
    "tls_context",
]
