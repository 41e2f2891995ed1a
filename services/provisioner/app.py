"""The provisioner's composition root: what is built from the settings, and what runs.

``wire`` builds the parts (driver, configurator, spare pool, handlers); ``create_app`` runs
them: the driver prepared, the start-up reconciliation, and four consumers:

- ``provisioner-lb-lifecycle``: every LB event -> handlers/lifecycle.py (create, apply,
  failover, delete);
- ``provisioner-amphora-failures``: ``AmphoraFailed`` -> handlers/failures.py (LB failover);
- ``provisioner-maintenance``: housekeeping's requests -> handlers/maintenance.py;
- ``provisioner-security-groups``: security group events -> handlers/security_groups.py (the
  VIP filters of the LBs naming the group pushed again);

and, with ``spare_pool_size`` > 0, the standalone spare refill loop (handlers/spares.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from libs.common import subjects
from libs.common.bus import ConsumerRunner, ConsumerSpec
from libs.common.eventstore import PostgresEventStore
from libs.common.pki import DeploymentCA
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from libs.common.secretstore import Keyring, PostgresSecretStore
from libs.common.service import (
    DB,
    JETSTREAM,
    METRICS,
    NATS_RECONNECTS,
    Metrics,
    background,
    base_app,
    nats_ctx,
    postgres_ctx,
    relay_ctx,
    watch_consumers,
)
from libs.common.settings import PostgresSettings
from libs.common.telemetry import setup_tracing
from services.provisioner.adapters.netns_network import HostPlacement
from services.provisioner.adapters.security_groups import StoredSecurityGroups
from services.provisioner.configurator import Configurator
from services.provisioner.drivers import AmphoraDriver
from services.provisioner.drivers.docker import DockerAmphoraDriver
from services.provisioner.drivers.hosts import HostsDriver
from services.provisioner.drivers.netns import NetnsAmphoraDriver
from services.provisioner.drivers.process import ProcessAmphoraDriver
from services.provisioner.drivers.traced import TracedDriver
from services.provisioner.handlers.compensation import Compensation
from services.provisioner.handlers.failures import FailoverRequests
from services.provisioner.handlers.lifecycle import LEAVE_NO_WORK, LifecycleHandler, work_lock
from services.provisioner.handlers.maintenance import MaintenanceHandler
from services.provisioner.handlers.security_groups import SecurityGroupChanges
from services.provisioner.handlers.spares import SparePool
from services.provisioner.handlers.startup import reconcile_pending
from services.provisioner.settings import ProvisionerSettings

# The amphora events housekeeping's requests arrive as (beside the housekeeping-<run> streams).
_MAINTENANCE_EVENTS = (
    "SpareAmphoraRequested",
    "SpareAmphoraRetirementRequested",
    "AmphoraFailed",
    "AmphoraCertificateRotationRequested",
)
_FAILURES_CONCURRENCY = 8
_SECURITY_GROUPS_CONCURRENCY = 2


@dataclass(frozen=True)
class Provisioner:
    """The parts of a running provisioner (``app[PROVISIONER]``)."""

    driver: TracedDriver
    configurator: Configurator
    spares: SparePool
    lifecycle: LifecycleHandler
    failures: FailoverRequests
    maintenance: MaintenanceHandler
    security_groups: SecurityGroupChanges


PROVISIONER = web.AppKey("provisioner", Provisioner)
# The two parts tests and benches reach most (also in PROVISIONER).
DRIVER = web.AppKey("driver", AmphoraDriver)
CONFIGURATOR = web.AppKey("configurator", Configurator)


def build_driver(settings: ProvisionerSettings, ca: DeploymentCA) -> AmphoraDriver:
    """The driver ``settings.driver`` names, or with ``settings.hosts`` one per host behind
    the hosts driver; raises ValueError for an unknown one."""
    agent_env = _agent_env(settings)
    if settings.hosts:
        return _hosts_driver(settings, ca, agent_env)
    return _single_driver(settings, ca, agent_env)


def _hosts_driver(
    settings: ProvisionerSettings, ca: DeploymentCA, agent_env: dict[str, str]
) -> HostsDriver:
    """A driver per host: netns hosts share the netns networks' switches and split each
    network's ``ip_range`` (unless given their own), docker hosts are engines of their own."""
    drivers: dict[str, AmphoraDriver] = {}
    for host in settings.hosts:
        if host.driver == "docker":
            docker = settings.docker.model_copy(update={"host": host.docker_host})
            drivers[host.name] = _single_driver(
                settings.model_copy(update={"driver": "docker", "docker": docker}), ca, agent_env
            )
            continue
        placement = HostPlacement(
            host.name, settings.address_ranges(host), settings.state_dir / ".switch.lock"
        )
        drivers[host.name] = NetnsAmphoraDriver(
            settings.netns,
            settings.state_dir / "hosts" / host.name,
            ca,
            agent_env=agent_env,
            boot_timeout=settings.boot_timeout,
            cert_validity_days=settings.cert_validity_days,
            host=placement,
        )
    return HostsDriver(drivers, settings.anti_affinity)


def _agent_env(settings: ProvisionerSettings) -> dict[str, str]:
    agent_env = {}
    if settings.heartbeat_key:
        agent_env["FULCRUM_AMPHORA_HEARTBEAT_KEY"] = settings.heartbeat_key
    if settings.health_endpoints:
        agent_env["FULCRUM_AMPHORA_HEALTH_ENDPOINTS"] = str(settings.health_endpoints).replace(
            "'", '"'
        )
        agent_env["FULCRUM_AMPHORA_HEARTBEAT_INTERVAL"] = str(settings.heartbeat_interval)
    # The agents export their spans where the provisioner does (under their own name).
    agent_env |= {
        k: v for k, v in os.environ.items() if k.startswith("OTEL_") and k != "OTEL_SERVICE_NAME"
    }
    return agent_env


def _single_driver(
    settings: ProvisionerSettings, ca: DeploymentCA, agent_env: dict[str, str]
) -> AmphoraDriver:
    if settings.driver == "process":
        return ProcessAmphoraDriver(
            settings.state_dir,
            ca,
            agent_env=agent_env,
            boot_timeout=settings.boot_timeout,
            cert_validity_days=settings.cert_validity_days,
            amphorae_per_process=settings.amphorae_per_agent_process,
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
    the pool must outnumber the handlers, or they could all wait for a second one. All of them
    are opened at start unless ``min_pool`` is set (a burst of creates finds them ready)."""
    handlers = (
        settings.concurrency
        + settings.maintenance_concurrency
        + _FAILURES_CONCURRENCY
        + _SECURITY_GROUPS_CONCURRENCY
    )
    return settings.postgres.model_copy(
        update={"max_pool": max(settings.postgres.max_pool, handlers + 2)}
    ).whole_pool_at_start()


def wire(settings: ProvisionerSettings, pool: asyncpg.Pool, metrics: Metrics) -> Provisioner:
    """Build every part from the settings; nothing runs yet."""
    ca = DeploymentCA.load_or_create(settings.ca_dir)
    keys = settings.secret_keys.strip()
    vault = PostgresSecretStore(pool, Keyring.from_setting(keys)) if keys else None
    groups = StoredSecurityGroups(pool)
    configurator = Configurator(
        ca,
        settings.ca_dir,
        vrrp=settings.vrrp,
        certificates=vault,
        security_groups=groups.rules,
        logs=settings.log_offload,
        haproxy_threads=settings.haproxy_threads or None,
    )
    inner = build_driver(settings, ca)
    driver = TracedDriver(inner)
    distribution = (
        inner.distribution if isinstance(inner, NetnsAmphoraDriver | DockerAmphoraDriver) else None
    )
    store = PostgresEventStore(pool)
    amphorae = AmphoraRepository(store)
    spares = SparePool(
        pool,
        amphorae,
        driver,
        settings.spare_pool_size,
        claim=settings.claim_spares,
        contact=configurator,
        defer=settings.spare_refill_defer,
    )
    compensation = Compensation(driver, amphorae, configurator.forget)
    return Provisioner(
        driver=driver,
        configurator=configurator,
        spares=spares,
        lifecycle=LifecycleHandler(
            store,
            driver,
            configurator.push,
            compensation,
            spares,
            configurator,
            distribution,
            drain_timeout=settings.drain_timeout,
        ),
        failures=FailoverRequests(LoadBalancerRepository(store), metrics),
        maintenance=MaintenanceHandler(
            store,
            driver,
            configurator,
            ca,
            metrics,
            cert_validity_days=settings.cert_validity_days,
        ),
        security_groups=SecurityGroupChanges(
            store, groups, driver, configurator.push_security_groups
        ),
    )


def consumer_specs(settings: ProvisionerSettings, parts: Provisioner) -> list[ConsumerSpec]:
    """The consumers and the events each takes."""
    return [
        ConsumerSpec(
            "provisioner-lb-lifecycle",
            [subjects.category_events("loadbalancer")],
            parts.lifecycle.handle,
            concurrency=settings.concurrency,
            acked_unhandled=LEAVE_NO_WORK,
            work_lock=work_lock,
        ),
        ConsumerSpec(
            "provisioner-amphora-failures",
            [subjects.events_of_type("amphora", "AmphoraFailed")],
            parts.failures.handle,
            concurrency=_FAILURES_CONCURRENCY,
        ),
        ConsumerSpec(
            "provisioner-maintenance",
            [
                *(subjects.events_of_type("amphora", name) for name in _MAINTENANCE_EVENTS),
                subjects.category_events("housekeeping"),
            ],
            parts.maintenance.handle,
            concurrency=settings.maintenance_concurrency,
        ),
        ConsumerSpec(
            "provisioner-security-groups",
            [subjects.category_events("securitygroup")],
            parts.security_groups.handle,
            concurrency=_SECURITY_GROUPS_CONCURRENCY,
        ),
    ]


def create_app(settings: ProvisionerSettings) -> web.Application:
    setup_tracing("provisioner", settings.telemetry.exporter)
    app = base_app("provisioner")
    app.cleanup_ctx.append(postgres_ctx(_pool_settings(settings)))
    app.cleanup_ctx.append(nats_ctx(settings.nats))
    app.cleanup_ctx.append(relay_ctx(settings.postgres, settings.nats, settings.relay))
    app.cleanup_ctx.append(functools.partial(_parts, settings))
    app.cleanup_ctx.append(functools.partial(_reconcile_at_start, settings))
    app.cleanup_ctx.append(functools.partial(_consumers, settings))
    return app


async def _parts(settings: ProvisionerSettings, app: web.Application) -> AsyncIterator[None]:
    """Wire the parts and prepare the driver; close both at shutdown (amphorae keep
    running)."""
    parts = wire(settings, app[DB], app[METRICS])
    app[PROVISIONER] = parts
    app[DRIVER] = parts.driver.inner  # the configured driver, without the tracing wrapper
    app[CONFIGURATOR] = parts.configurator
    await parts.driver.prepare()
    try:
        async with background(parts.configurator.keep_warm(), "spare connections"):
            yield
    finally:
        await parts.configurator.close()
        await parts.driver.close()


async def _reconcile_at_start(
    settings: ProvisionerSettings, app: web.Application
) -> AsyncIterator[None]:
    """Finish half-done work in the background while the consumers already run."""
    pending = reconcile_pending(app[DB], app[PROVISIONER].lifecycle, settings.concurrency)
    async with background(pending, "start-up reconciliation"):
        yield


async def _consumers(settings: ProvisionerSettings, app: web.Application) -> AsyncIterator[None]:
    runners = [
        ConsumerRunner(
            app[JETSTREAM], app[DB], spec, settings.nats, reconnects=app[NATS_RECONNECTS]
        )
        for spec in consumer_specs(settings, app[PROVISIONER])
    ]
    app[METRICS].inc("consumers_started", len(runners))
    watch_consumers(app, *runners)
    async with contextlib.AsyncExitStack() as running:
        for runner in runners:
            await running.enter_async_context(background(runner.run(), runner.name))
        if settings.spare_pool_size > 0:  # the standalone refill loop (see settings)
            loop = app[PROVISIONER].spares.run(settings.spare_refill_interval)
            await running.enter_async_context(background(loop, "spare pool"))
        yield
