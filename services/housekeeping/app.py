"""The housekeeping service's wiring: Postgres, NATS and the relay, then one loop per job."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from libs.common.eventstore import PostgresEventStore
from libs.common.repository import AmphoraRepository
from libs.common.service import DB, METRICS, background, base_app, nats_ctx, postgres_ctx, relay_ctx
from libs.common.telemetry import setup_tracing
from services.housekeeping.adapters.fleet_metrics import fleet_families
from services.housekeeping.handlers.certificates import CertificateRotationJob
from services.housekeeping.handlers.orphans import OrphanReconciliationJob
from services.housekeeping.handlers.purge import RetentionPurgeJob
from services.housekeeping.handlers.runner import JobRunner, Pass
from services.housekeeping.handlers.spares import SparePoolJob
from services.housekeeping.handlers.stranded import StrandedWorkJob
from services.housekeeping.settings import HousekeepingSettings, JobSettings


@dataclass(frozen=True)
class Jobs:
    """Every job (enabled or not) and the runners of the enabled ones, by job name (tests
    call ``runners[name].tick()`` or a job's methods directly)."""

    spares: SparePoolJob
    stranded: StrandedWorkJob
    orphans: OrphanReconciliationJob
    purge: RetentionPurgeJob
    certificates: CertificateRotationJob
    runners: dict[str, JobRunner]


JOBS = web.AppKey("jobs", Jobs)


def create_app(settings: HousekeepingSettings) -> web.Application:
    setup_tracing("housekeeping", settings.telemetry.exporter)
    app = base_app("housekeeping")
    app.cleanup_ctx.append(postgres_ctx(settings.postgres))
    app.cleanup_ctx.append(nats_ctx(settings.nats))
    app.cleanup_ctx.append(relay_ctx(settings.postgres, settings.nats, settings.relay))

    async def run_jobs(app: web.Application) -> AsyncIterator[None]:
        pool, metrics = app[DB], app[METRICS]
        store = PostgresEventStore(pool)
        amphorae = AmphoraRepository(store)
        jobs = Jobs(
            spares=SparePoolJob(pool, amphorae, settings.spares, metrics),
            stranded=StrandedWorkJob(pool, store, settings.stranded, metrics),
            orphans=OrphanReconciliationJob(store, settings.orphans, metrics),
            purge=RetentionPurgeJob(pool, settings.purge, metrics),
            certificates=CertificateRotationJob(pool, amphorae, settings.certificates, metrics),
            runners={},
        )
        schedule: dict[str, tuple[JobSettings, Pass]] = {
            "spares": (settings.spares, jobs.spares.run_pass),
            "stranded": (settings.stranded, jobs.stranded.run_pass),
            "orphans": (settings.orphans, jobs.orphans.run_pass),
            "purge": (settings.purge, jobs.purge.run_pass),
            "certificates": (settings.certificates, jobs.certificates.run_pass),
        }
        for name, (config, run_pass) in schedule.items():
            if config.enabled:
                jobs.runners[name] = JobRunner(pool, name, config.interval, run_pass, metrics)
        metrics.gauge("spares_ready", lambda: float(jobs.spares.ready))
        metrics.scraped(lambda: fleet_families(pool, metrics.namespace))
        app[JOBS] = jobs
        async with contextlib.AsyncExitStack() as stack:
            for name, runner in jobs.runners.items():
                await stack.enter_async_context(background(runner.run(), f"housekeeping {name}"))
            yield

    app.cleanup_ctx.append(run_jobs)
    return app
