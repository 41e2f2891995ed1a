"""What every Fulcrum service app shares: ``/healthz``, ``/readyz``, ``/metrics`` and lifecycle
contexts.

A service's ``app.py`` builds ``base_app(name)`` and appends the ``cleanup_ctx`` generators it
needs (Postgres, NATS, the outbox relay, its own loops). Each context tears down only what it
set up; background loops run as tasks that are cancelled on shutdown.

``/healthz`` answers 200 while the process serves. ``/readyz`` (see ``libs.common.readiness``)
answers 200 or 503 from the checks the contexts register as they start: ``postgres``
(``SELECT 1`` on the pool), ``nats`` (connected, and JetStream answers stream info),
``outbox`` (with the relay: no row older than ``RelaySettings.stuck_after`` unless this relay
is draining them) and ``consumers`` (every runner given to ``watch_consumers`` is attached).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from libs.common import bus
from libs.common.consumer_metrics import count_fetches, scrape_consumers
from libs.common.database import create_pool, ping
from libs.common.metrics import Metrics as Metrics  # re-exported for the services
from libs.common.metrics import request_middleware
from libs.common.outbox import OutboxRelay, backlog
from libs.common.readiness import Check, NotReady, Readiness
from libs.common.schema import upgrade
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings
from libs.common.tasks import background as background  # re-exported for the services

log = logging.getLogger(__name__)

Ctx = Callable[[web.Application], AsyncIterator[None]]


DB = web.AppKey("db", asyncpg.Pool)
NATS = web.AppKey("nats", NatsClient)
JETSTREAM = web.AppKey("jetstream", JetStreamContext)
# The reconnects of app[NATS] (for ConsumerRunner).
NATS_RECONNECTS = web.AppKey("nats_reconnects", bus.Reconnects)
METRICS = web.AppKey("metrics", Metrics)
RELAY = web.AppKey("relay", OutboxRelay)
SERVICE_NAME = web.AppKey("service_name", str)
READINESS = web.AppKey("readiness", Readiness)
CONSUMERS = web.AppKey("consumers", list[bus.ConsumerRunner])


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": request.app[SERVICE_NAME]})


def base_app(name: str, *, middlewares: Sequence[Any] = ()) -> web.Application:
    """An app serving ``/healthz``, ``/readyz`` and ``/metrics``; add routes and contexts."""
    metrics = Metrics(f"fulcrum_{name}")
    app = web.Application(middlewares=[request_middleware(metrics), *middlewares])
    app[SERVICE_NAME] = name
    app[METRICS] = metrics
    app[READINESS] = Readiness(name)
    app[CONSUMERS] = []
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", app[READINESS].respond)
    app.router.add_get("/metrics", app[METRICS].respond)
    return app


def freeze_heap_after_start(app: web.Application) -> None:
    """Once ``app`` has started (every context set up), collect garbage once and freeze what
    is left (``gc.freeze``): the collector's full passes during work then walk what the work
    made, not the ~100,000 objects start-up leaves (modules, settings, pools, templates),
    which cost the provisioner a 60 ms pass in the middle of a 30-LB burst. For a service's
    own process (its ``__main__``): frozen objects are never collected, so not for the apps a
    test process starts and stops."""
    app.on_startup.append(_freeze_heap)


async def _freeze_heap(_: web.Application) -> None:
    gc.collect()
    gc.freeze()


def postgres_ctx(settings: PostgresSettings) -> Ctx:
    """Open the pool and upgrade the schema (``libs.common.schema``); close the pool at
    shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        try:
            await upgrade(pool)
            app[DB] = pool
            app[READINESS].add("postgres", _postgres_answers(pool))
            yield
        finally:
            await pool.close()

    return ctx


def nats_ctx(settings: NatsSettings) -> Ctx:
    """Connect to NATS and ensure the event stream exists; drain at shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        reconnects = bus.Reconnects()
        nc = await bus.connect(settings, app[SERVICE_NAME], reconnects)
        try:
            js = nc.jetstream()
            await bus.ensure_stream(js, settings)
            app[NATS] = nc
            app[NATS_RECONNECTS] = reconnects
            app[JETSTREAM] = js
            app[READINESS].add("nats", _jetstream_answers(nc, js, settings.stream))
            yield
        finally:
            await nc.close()

    return ctx


def relay_ctx(pg: PostgresSettings, nats_settings: NatsSettings, settings: RelaySettings) -> Ctx:
    """Run this process's outbox relay (active only while it holds the relay lock)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.enabled:
            yield
            return
        publisher = bus.JetStreamPublisher(app[JETSTREAM], nats_settings)
        relay = OutboxRelay(pg.dsn, publisher, settings)
        app[RELAY] = relay
        metrics = app[METRICS]
        metrics.counter_reading(
            "relay_published_total",
            lambda: float(relay.published),
            "Outbox rows this process's relay published to the bus.",
        )
        metrics.gauge(
            "relay_active",
            lambda: float(relay.active),
            "1 while this process holds the relay lock.",
        )
        app[READINESS].add("outbox", _outbox_moving(app[DB], relay, settings.stuck_after))
        async with background(relay.run(), "outbox relay"):
            yield

    return ctx


def watch_consumers(app: web.Application, *runners: bus.ConsumerRunner) -> None:
    """Make ``/readyz`` require ``runners`` attached (one ``consumers`` check for them all);
    ``/metrics`` shows their lag, redeliveries and pending messages."""
    watched = app[CONSUMERS]
    watched.extend(runners)
    for runner in runners:
        count_fetches(app[METRICS], runner)
    if "consumers" not in app[READINESS]:
        app[READINESS].add("consumers", lambda: _consumers_attached(watched))
        scrape_consumers(app[METRICS], watched)


# -- readiness checks (run by libs.common.readiness, which bounds each in time) ---------------


def _postgres_answers(pool: asyncpg.Pool) -> Check:
    async def check() -> str:
        started = time.monotonic()
        await ping(pool)
        return f"SELECT 1 answered in {(time.monotonic() - started) * 1000:.1f} ms"

    return check


def _jetstream_answers(nc: NatsClient, js: JetStreamContext, stream: str) -> Check:
    async def check() -> str:
        if not nc.is_connected:
            state = "reconnecting" if nc.is_reconnecting else "closed" if nc.is_closed else "down"
            raise NotReady(f"not connected to NATS ({state})")
        info = await js.stream_info(stream)
        server = nc.connected_url
        where = f" to {server.hostname}:{server.port}" if server else ""
        return f"connected{where}; stream {stream} holds {info.state.messages} messages"

    return check


def _outbox_moving(pool: asyncpg.Pool, relay: OutboxRelay, stuck_after: float) -> Check:
    async def check() -> str:
        waiting = await backlog(pool)
        if waiting.rows == 0:
            return "empty"
        age = waiting.oldest_age or 0.0
        rows = f"{waiting.rows} row" + ("s" if waiting.rows != 1 else "")
        summary = f"{rows} waiting, the oldest for {age:.1f} s"
        if age < stuck_after:
            return summary
        progressed = relay.progressed_at
        if progressed is not None and time.monotonic() - progressed < stuck_after:
            return f"{summary}; this process's relay is draining them"
        role = "active" if relay.active else "standby (another process holds the relay lock)"
        raise NotReady(f"stuck: {summary} (limit {stuck_after:g} s); the relay here is {role}")

    return check


async def _consumers_attached(runners: Sequence[bus.ConsumerRunner]) -> str:
    detached = [runner for runner in runners if not runner.attached]
    if detached:
        raise NotReady(
            "not attached: "
            + "; ".join(f"{r.name} ({r.last_error or 'not bound yet'})" for r in detached)
        )
    return f"{len(runners)} attached: " + ", ".join(runner.name for runner in runners)
