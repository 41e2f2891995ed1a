"""The API's wiring: Octavia v2 routes, the error middleware, Postgres, NATS and the outbox
relay (the API process relays what it appends), and the use cases over the read model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.service import DB, base_app, nats_ctx, postgres_ctx, relay_ctx
from libs.common.telemetry import setup_tracing
from services.api.adapters import views as views_adapter
from services.api.adapters.views import PostgresViews
from services.api.domain.quotas import QuotaGuard
from services.api.domain.usecases import Config, LoadBalancing
from services.api.http.context import RESOLVER, build_resolver
from services.api.http.deps import SETTINGS, USECASES, VIEWS
from services.api.http.errors import octavia_middleware
from services.api.http.resources import (
    healthmonitors,
    l7policies,
    l7rules,
    listeners,
    loadbalancers,
    members,
    pools,
    versions,
)
from services.api.http.routing import ApiRouter, Registrar
from services.api.settings import ApiSettings

# Every resource module; adding one (quotas, flavors, amphorae, the Neutron subset...) is one
# line here: its ``register(api)`` adds its routes under every Octavia prefix.
ROUTE_MODULES: Final[tuple[Registrar, ...]] = (
    versions.register,
    loadbalancers.register,
    listeners.register,
    pools.register,
    members.register,
    healthmonitors.register,
    l7policies.register,
    l7rules.register,
)
ROUTE_SPECS = web.AppKey("route_specs", ApiRouter)


def create_app(settings: ApiSettings) -> web.Application:
    """The API app; its cleanup contexts open Postgres (and migrate), NATS and the relay."""
    setup_tracing("api", settings.telemetry)
    app = base_app("api", middlewares=[octavia_middleware])
    app[SETTINGS] = settings
    app[RESOLVER] = build_resolver(settings)
    api = ApiRouter(app.router)
    for register in ROUTE_MODULES:
        register(api)
    app[ROUTE_SPECS] = api
    app.cleanup_ctx.append(postgres_ctx(settings.postgres, extra_ddl=[views_adapter.DDL]))
    app.cleanup_ctx.append(nats_ctx(settings.nats))
    app.cleanup_ctx.append(relay_ctx(settings.postgres, settings.nats, settings.relay))

    async def use_cases(app: web.Application) -> AsyncIterator[None]:
        views = PostgresViews(app[DB])
        app[VIEWS] = views
        app[USECASES] = LoadBalancing(
            LoadBalancerRepository(PostgresEventStore(app[DB])),
            views,
            QuotaGuard(views, settings.quota.model_dump()),
            Config(
                network=settings.network,
                reserved_ips=frozenset(settings.reserved_ips),
                provider=settings.provider,
                topology=settings.loadbalancer_topology,
            ),
        )
        yield

    app.cleanup_ctx.append(use_cases)
    return app
