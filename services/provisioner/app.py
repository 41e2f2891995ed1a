"""The provisioner's wiring: consumers of LB and amphora events, driver, agent clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from libs.common import subjects
from libs.common.bus import ConsumerRunner, ConsumerSpec
from libs.common.domain import commands as c
from libs.common.errors import InvalidState, NotFound
from libs.common.events import Envelope, Metadata
from libs.common.events import amphora as amp_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.pki import DeploymentCA
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from libs.common.secretstore import Keyring, PostgresSecretStore
from libs.common.service import (
    DB,
    JETSTREAM,
    METRICS,
    background,
    base_app,
    nats_ctx,
    postgres_ctx,
    relay_ctx,
    watch_consumers,
)
from libs.common.settings import PostgresSettings
from libs.common.telemetry import setup_tracing
from services.provisioner.adapters.postgres import pending_loadbalancer_ids
from services.provisioner.configurator import Configurator
from services.provisioner.drivers import AmphoraDriver
from services.provisioner.drivers.docker import DockerAmphoraDriver
from services.provisioner.drivers.netns import NetnsAmphoraDriver
from services.provisioner.drivers.process import ProcessAmphoraDriver
from services.provisioner.handlers.lifecycle import LifecycleHandler
from services.provisioner.handlers.maintenance import MaintenanceHandler
from services.provisioner.handlers.spares import SparePool
from services.provisioner.settings import ProvisionerSettings

log = logging.getLogger(__name__)

LIFECYCLE = web.AppKey("lifecycle", LifecycleHandler)
DRIVER = web.AppKey("driver", AmphoraDriver)
CONFIGURATOR = web.AppKey("configurator", Configurator)
SPARES = web.AppKey("spares", SparePool)
MAINTENANCE = web.AppKey("maintenance", MaintenanceHandler)
# The amphora events housekeeping's requests arrive as (beside the housekeeping-<run> streams).
_MAINTENANCE_EVENTS = (
    "SpareAmphoraRequested",
    "SpareAmphoraRetirementRequested",
    "AmphoraFailed",
    "AmphoraCertificateRotationRequested",
)
_FAILURES_CONCURRENCY = 8


def build_driver(settings: ProvisionerSettings, ca: DeploymentCA) -> AmphoraDriver:
    agent_env = {}
    if settings.heartbeat_key:
        agent_env["FULCRUM_AMPHORA_HEARTBEAT_KEY"] = settings.heartbeat_key
    if settings.health_endpoints:
        agent_env["FULCRUM_AMPHORA_HEALTH_ENDPOINTS"] = str(settings.health_endpoints).replace(
            "'", '"'
        )
        agent_env["FULCRUM_AMPHORA_HEARTBEAT_INTERVAL"] = str(settings.heartbeat_interval)
    if settings.driver == "process":
        return ProcessAmphoraDriver(
            settings.state_dir,
            ca,
            agent_env=agent_env,
            boot_timeout=settings.boot_timeout,
            cert_validity_days=settings.cert_validity_days,
        )
    if settings.driver == "docker":
        return DockerAmphoraDriver(
            settings.docker,
            ca,
            agent_env=agent_env,
            boot_timeout=settings.boot_timeout,
            cert_validity_days=settings.cert_validity_days,
        )
    if settings.driver == "netns":
        return NetnsAmphoraDriver(
            settings.netns,
            settings.state_dir,
            ca,
            agent_env=agent_env,
            boot_timeout=settings.boot_timeout,
            cert_validity_days=settings.cert_validity_days,
        )
    raise ValueError(f"driver {settings.driver!r} is not available in this build")


def _pool_settings(settings: ProvisionerSettings) -> PostgresSettings:
    """Every in-flight consumer handler holds a connection and reads the store on another:
    the pool must outnumber the handlers, or they could all wait for a second one."""
    handlers = settings.concurrency + settings.maintenance_concurrency + _FAILURES_CONCURRENCY
    return settings.postgres.model_copy(
        update={"max_pool": max(settings.postgres.max_pool, handlers + 2)}
    )


def create_app(settings: ProvisionerSettings) -> web.Application:
    setup_tracing("provisioner", settings.telemetry)
    app = base_app("provisioner")
    app.cleanup_ctx.append(postgres_ctx(_pool_settings(settings)))
    app.cleanup_ctx.append(nats_ctx(settings.nats))
    app.cleanup_ctx.append(relay_ctx(settings.postgres, settings.nats, settings.relay))

    async def machinery(app: web.Application) -> AsyncIterator[None]:
        ca = DeploymentCA.load_or_create(settings.ca_dir)
        keys = settings.secret_keys.strip()
        vault = PostgresSecretStore(app[DB], Keyring.from_setting(keys)) if keys else None
        configurator = Configurator(ca, settings.ca_dir, vrrp=settings.vrrp, certificates=vault)
        driver = build_driver(settings, ca)
        store = PostgresEventStore(app[DB])
        spares = SparePool(
            app[DB],
            AmphoraRepository(store),
            driver,
            settings.spare_pool_size,
            claim=settings.claim_spares,
        )
        lifecycle = LifecycleHandler(store, driver, configurator.push, spares, configurator)
        app[MAINTENANCE] = MaintenanceHandler(
            store,
            driver,
            configurator,
            ca,
            app[METRICS],
            cert_validity_days=settings.cert_validity_days,
        )
        app[SPARES] = spares
        app[CONFIGURATOR] = configurator
        app[DRIVER] = driver
        if isinstance(driver, ProcessAmphoraDriver | NetnsAmphoraDriver):
            await driver.prepare()
        app[LIFECYCLE] = lifecycle
        try:
            yield
        finally:
            await configurator.close()
            if isinstance(driver, ProcessAmphoraDriver | NetnsAmphoraDriver):
                await driver.close()  # its zygote; the amphorae keep running
            if isinstance(driver, DockerAmphoraDriver):
                await driver.close()

    async def reconcile_at_start(app: web.Application) -> AsyncIterator[None]:
        """Finish work a previous provisioner left half-done (it may have been killed), in the
        background and in parallel, while the consumers already run (per-LB locks serialize)."""
        pool = app[DB]
        slots = asyncio.Semaphore(settings.concurrency)

        async def one(lb_id: str) -> None:
            async with slots, pool.acquire() as conn, conn.transaction():
                await app[LIFECYCLE].reconcile(lb_id, conn, Metadata(actor="provisioner"))

        async def all_pending(app: web.Application) -> None:
            results = await asyncio.gather(
                *(one(lb_id) for lb_id in await pending_loadbalancer_ids(pool)),
                return_exceptions=True,
            )
            for error in (r for r in results if isinstance(r, BaseException)):
                log.error("start-up reconciliation failed", exc_info=error)

        async with background(all_pending(app), "start-up reconciliation"):
            yield

    async def consumers(app: web.Application) -> AsyncIterator[None]:
        store = PostgresEventStore(app[DB])
        lbs = LoadBalancerRepository(store)

        async def on_amphora_failed(envelope: Envelope, conn: object) -> None:
            payload = envelope.payload
            assert isinstance(payload, amp_ev.AmphoraFailed)
            if payload.loadbalancer_id is None:
                return
            command = c.FailoverLoadBalancer(payload.amphora_id, reason=payload.reason)
            try:
                await lbs.execute(
                    payload.loadbalancer_id,
                    command,
                    envelope.metadata.caused_by(envelope),
                    conn=conn,
                )
            except (InvalidState, NotFound) as exc:
                # The LB is being deleted or changed: its own flow replaces what is missing.
                log.warning("amphora %s failed but no failover: %s", payload.amphora_id, exc)

        lifecycle = ConsumerRunner(
            app[JETSTREAM],
            app[DB],
            ConsumerSpec(
                "provisioner-lb-lifecycle",
                [subjects.category_events("loadbalancer")],
                app[LIFECYCLE].handle,
                concurrency=settings.concurrency,
            ),
            settings.nats,
        )
        failures = ConsumerRunner(
            app[JETSTREAM],
            app[DB],
            ConsumerSpec(
                "provisioner-amphora-failures",
                [subjects.events_of_type("amphora", "AmphoraFailed")],
                on_amphora_failed,
                concurrency=_FAILURES_CONCURRENCY,
            ),
            settings.nats,
        )
        maintenance = ConsumerRunner(
            app[JETSTREAM],
            app[DB],
            ConsumerSpec(
                "provisioner-maintenance",
                [
                    *(subjects.events_of_type("amphora", name) for name in _MAINTENANCE_EVENTS),
                    subjects.category_events("housekeeping"),
                ],
                app[MAINTENANCE].handle,
                concurrency=settings.maintenance_concurrency,
            ),
            settings.nats,
        )
        app[METRICS].inc("consumers_started", 3)
        watch_consumers(app, lifecycle, failures, maintenance)
        async with (
            background(lifecycle.run(), "lb lifecycle"),
            background(failures.run(), "amphora failures"),
            background(maintenance.run(), "housekeeping requests"),
            contextlib.AsyncExitStack() as optional,
        ):
            if settings.spare_pool_size > 0:  # the standalone refill loop (see settings)
                await optional.enter_async_context(
                    background(app[SPARES].run(settings.spare_refill_interval), "spare pool")
                )
            yield

    app.cleanup_ctx.append(machinery)
    app.cleanup_ctx.append(reconcile_at_start)
    app.cleanup_ctx.append(consumers)
    return app
