"""The health service's wiring: UDP intake, batched writers, status recorder, stale scan,
autoscaler."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from typing import Final

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric

from libs.common.errors import ConfigurationError
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from libs.common.service import (
    DB,
    METRICS,
    Metrics,
    background,
    base_app,
    nats_ctx,
    postgres_ctx,
    relay_ctx,
)
from libs.common.settings import HEARTBEAT_KEY_ENV
from libs.common.telemetry import setup_tracing
from services.health.adapters.traffic_metrics import traffic_families
from services.health.handlers.autoscaler import Autoscaler
from services.health.handlers.directory import AmphoraDirectory
from services.health.handlers.receiver import HeartbeatIntake, UdpReceiver, bind_udp
from services.health.handlers.stale_scan import ScanPolicy, StaleScanner
from services.health.handlers.status import StatusRecorder
from services.health.handlers.writer import HealthWriter
from services.health.settings import HealthSettings

DIRECTORY = web.AppKey("directory", AmphoraDirectory)
WRITER = web.AppKey("writer", HealthWriter)
STATUS = web.AppKey("status", StatusRecorder)
INTAKE = web.AppKey("intake", HeartbeatIntake)
SCANNER = web.AppKey("scanner", StaleScanner)
AUTOSCALER = web.AppKey("autoscaler", Autoscaler)
# Where heartbeats are received: (host, port) as bound (port 0 in settings: any free port).
UDP_ADDRESS = web.AppKey("udp_address", tuple[str, int])
RECEIVER = web.AppKey("receiver", UdpReceiver)


# outcome label -> the receiver's counter (services/health/handlers/receiver.py).
HEARTBEAT_OUTCOMES: Final = {
    "accepted": "heartbeats_accepted_total",
    "rejected_hmac": "heartbeats_dropped_bad_hmac_total",
    "garbled": "heartbeats_dropped_garbled_total",
    "oversized": "heartbeats_dropped_oversized_total",
    "stale": "heartbeats_dropped_replayed_total",
    "unknown_amphora": "heartbeats_unknown_amphora_total",
    "failed": "heartbeats_failed_total",
}


async def heartbeat_outcomes(metrics: Metrics) -> Iterable[Metric]:
    """``heartbeats_total{outcome}``: every received heartbeat under exactly one outcome."""
    family = CounterMetricFamily(
        f"{metrics.namespace}_heartbeats",
        "Heartbeats received, by outcome (stale: a sequence number already seen).",
        labels=["outcome"],
    )
    for outcome, counter in HEARTBEAT_OUTCOMES.items():
        family.add_metric([outcome], metrics.value(counter))
    return [family]


def check_settings(settings: HealthSettings) -> None:
    """Raise ConfigurationError with the reason when the settings cannot work."""
    if not settings.heartbeat_key.strip():
        raise ConfigurationError(
            f"{HEARTBEAT_KEY_ENV} is empty: heartbeats could not be authenticated"
        )
    if settings.receive_gather >= settings.health_check_interval:
        raise ConfigurationError(
            f"receive_gather ({settings.receive_gather} s) must be shorter than "
            f"health_check_interval ({settings.health_check_interval} s): heartbeats would "
            "wait longer to be read than a scan period"
        )
    if settings.health_check_interval >= settings.heartbeat_timeout:
        raise ConfigurationError(
            f"health_check_interval ({settings.health_check_interval} s) must be shorter than "
            f"heartbeat_timeout ({settings.heartbeat_timeout} s)"
        )


def create_app(settings: HealthSettings) -> web.Application:
    """The app; raises ConfigurationError before anything starts."""
    check_settings(settings)
    setup_tracing("health", settings.telemetry.exporter)
    app = base_app("health")
    app.cleanup_ctx.append(postgres_ctx(settings.postgres))
    app.cleanup_ctx.append(nats_ctx(settings.nats))
    app.cleanup_ctx.append(relay_ctx(settings.postgres, settings.nats, settings.relay))

    async def machinery(app: web.Application) -> AsyncIterator[None]:
        """Directory, writers and intake; their loops run for the app's lifetime."""
        pool, metrics = app[DB], app[METRICS]
        directory = AmphoraDirectory(pool, settings.refresh_interval)
        await directory.reload()
        writer = HealthWriter(pool, metrics, settings.flush_interval)
        directory.on_prune(writer.forget_gone)
        status = StatusRecorder(
            pool,
            LoadBalancerRepository(PostgresEventStore(pool)),
            metrics,
            writers=settings.status_writers,
            refresh_interval=settings.refresh_interval,
        )
        autoscaler = Autoscaler(
            LoadBalancerRepository(PostgresEventStore(pool)), settings.autoscale, metrics
        )
        intake = HeartbeatIntake(
            settings.heartbeat_key,
            directory,
            writer,
            status,
            metrics,
            max_datagram=settings.max_datagram,
            autoscaler=autoscaler if settings.autoscale.enabled else None,
        )
        metrics.gauge("amphora_directory_size", lambda: float(len(directory)))
        metrics.gauge("lb_cache_size", lambda: float(len(status)))
        metrics.scraped(lambda: heartbeat_outcomes(metrics))
        metrics.scraped(lambda: traffic_families(pool, metrics.namespace))
        app[DIRECTORY], app[WRITER], app[STATUS], app[INTAKE] = directory, writer, status, intake
        app[AUTOSCALER] = autoscaler
        async with (
            background(directory.run(), "amphora directory"),
            background(status.run(), "status recorder"),
            background(writer.run(), "health writer"),
            background(autoscaler.run(), "autoscaler"),
        ):
            yield

    async def udp(app: web.Application) -> AsyncIterator[None]:
        """Receive heartbeats; closed first at shutdown, before the last flush."""
        sock = bind_udp(settings.udp_host, settings.udp_port, settings.udp_receive_buffer)
        receiver = UdpReceiver(
            sock, app[INTAKE], settings.max_datagram, gather=settings.receive_gather
        )
        host, port = sock.getsockname()[:2]
        app[UDP_ADDRESS] = (str(host), int(port))
        app[INTAKE].receiving_since = time.monotonic()
        receiver.start()
        app[RECEIVER] = receiver
        try:
            yield
        finally:
            receiver.close()

    async def scanner(app: web.Application) -> AsyncIterator[None]:
        policy = ScanPolicy(
            heartbeat_timeout=settings.heartbeat_timeout,
            health_check_interval=settings.health_check_interval,
            failover_threshold=settings.failover_threshold,
            stale_grace=settings.stale_grace,
        )
        intake, directory, writer = app[INTAKE], app[DIRECTORY], app[WRITER]
        scan = StaleScanner(
            settings.postgres.dsn,
            AmphoraRepository(PostgresEventStore(app[DB])),
            policy,
            app[METRICS],
            lambda: intake.receiving_since,
            unheard=lambda before, within: directory.unheard(writer.heard, before, within),
            caught_up=app[RECEIVER].caught_up,
            heard=writer.heard,
        )
        app[SCANNER] = scan
        app[METRICS].gauge("scanner_active", lambda: float(scan.active))
        app[METRICS].gauge("amphorae_failover_stopped", lambda: float(scan.stopped))
        async with background(scan.run(), "stale scan"):
            yield

    app.cleanup_ctx.append(machinery)
    app.cleanup_ctx.append(udp)
    app.cleanup_ctx.append(scanner)
    return app
