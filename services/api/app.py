"""The API's wiring: Octavia v2 routes, the error middleware, Postgres, NATS and the outbox
relay (the API process relays what it appends), and the use cases over the read model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Final

from aiohttp import web

from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.service import DB, base_app, nats_ctx, postgres_ctx, relay_ctx
from libs.common.telemetry import setup_tracing
from services.api.adapters.login_failures import PostgresLoginFailures
from services.api.adapters.quotas import PostgresQuotaLimits
from services.api.adapters.revocations import PostgresRevocations
from services.api.adapters.security_groups import PostgresSecurityGroups
from services.api.adapters.views import PostgresViews
from services.api.auth.identity import IdentityConfig, IdentityFile, load_or_bootstrap
from services.api.auth.keystone import CatalogSettings, KeystoneApi
from services.api.auth.throttle import LoginThrottle, ThrottleLimits
from services.api.auth.tokens import TokenSigner, new_token_key, parse_token_keys
from services.api.dashboard import register as register_dashboard
from services.api.domain.event_feed import FeedSlots
from services.api.domain.kinds import KINDS
from services.api.domain.providers import DriverAbilities
from services.api.domain.queries import ListQuery
from services.api.domain.quota_limits import SetQuota
from services.api.domain.quotas import QuotaGuard
from services.api.domain.usecases import Config, LoadBalancing
from services.api.http.client_address import client_address_middleware
from services.api.http.context import IDENTITY, RESOLVER, build_resolver, request_context
from services.api.http.deps import ABILITIES, SETTINGS, USECASES, VIEWS
from services.api.http.errors import octavia_middleware
from services.api.http.neutron import NeutronApi, vip_port_body
from services.api.http.operator import operator_split
from services.api.http.resources import (
    amphorae,
    availabilityzoneprofiles,
    availabilityzones,
    barbican,
    children,
    events,
    flavorprofiles,
    flavors,
    identity,
    loadbalancers,
    openapi,
    providers,
    quotas,
    versions,
)
from services.api.http.resources.identity import NEUTRON
from services.api.http.routing import ApiRouter, Registrar
from services.api.http.security_groups import register as register_security_groups
from services.api.settings import ApiSettings

# Every resource module; adding one (quotas, flavors, amphorae, the Neutron subset...) is one
# line here: its ``register(api)`` adds its routes under every Octavia prefix.
ROUTE_MODULES: Final[tuple[Registrar, ...]] = (
    versions.register,
    loadbalancers.register,
    children.register,
    quotas.register,
    flavors.register,
    flavorprofiles.register,
    availabilityzones.register,
    availabilityzoneprofiles.register,
    providers.register,
    amphorae.register,
    identity.register,
    barbican.register,
    openapi.register,
    events.register,
    register_security_groups,
)
ROUTE_SPECS = web.AppKey("route_specs", ApiRouter)
# What every response says of its server: no product version (aiohttp's default names
# Python's and its own).
SERVER_HEADER: Final = "fulcrum"


async def _no_version_banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


def build_identity(settings: ApiSettings) -> KeystoneApi:
    """The Keystone subset; with ``keystone`` auth it needs a token key and an identity file
    (bootstrapped with ``admin_password`` when missing). Raises ValueError otherwise."""
    if settings.auth_strategy == "keystone":
        if not settings.token_keys.strip():
            raise ValueError(
                "auth_strategy keystone needs FULCRUM_API_TOKEN_KEYS (Fernet keys, newest first)"
            )
        keys = parse_token_keys(settings.token_keys)
        if not settings.identity_file.exists() and not settings.admin_password:
            raise ValueError(
                f"{settings.identity_file} does not exist: set FULCRUM_API_ADMIN_PASSWORD to "
                "bootstrap an admin, or write the identity file"
            )
        config = load_or_bootstrap(settings.identity_file, settings.admin_password)
        source: IdentityConfig | IdentityFile = IdentityFile(settings.identity_file, config)
    else:
        config, keys = IdentityConfig(), (new_token_key(),)
        source = config
    admin_project = config.project(name="admin")
    return KeystoneApi(
        source,
        TokenSigner(keys, timedelta(hours=settings.token_lifetime_hours)),
        CatalogSettings(region=settings.region, extra_services=barbican.catalog_entries(settings)),
        public_url=settings.public_url or None,
        admin_token=settings.admin_token or None,
        admin_project_id=admin_project.id if admin_project else settings.default_project_id,
    )


def throttle_limits(settings: ApiSettings) -> ThrottleLimits:
    """The brute-force limits the settings give (every replica must be given the same)."""
    return ThrottleLimits(
        per_user=settings.login_failures_per_user,
        per_address=settings.login_failures_per_address,
        window=settings.login_failure_window,
    )


def create_app(settings: ApiSettings) -> web.Application:
    """The API app; its cleanup contexts open Postgres (and upgrade its schema), NATS and the
    relay."""
    setup_tracing("api", settings.telemetry.exporter)
    split = [operator_split(settings.operator_port)] if settings.operator_port else []
    client = client_address_middleware(settings.trusted_proxies)
    app = base_app("api", middlewares=[client, octavia_middleware, *split])
    app.on_response_prepare.append(_no_version_banner)
    app[SETTINGS] = settings
    app[ABILITIES] = DriverAbilities.of(
        settings.amphora_driver, settings.amphora_ceiling, settings.distributor
    )
    app[IDENTITY] = build_identity(settings)
    app[RESOLVER] = build_resolver(settings)
    app[events.OPEN_FEEDS] = events.OpenFeeds(FeedSlots(settings.feed.max_per_project))
    app.on_shutdown.append(events.end_feeds)
    api = ApiRouter(app.router)
    for register in ROUTE_MODULES:
        register(api)
    app[ROUTE_SPECS] = api
    register_dashboard(app.router)
    # A burst of writes finds its connections open (unless min_pool is set).
    app.cleanup_ctx.append(postgres_ctx(settings.postgres.whole_pool_at_start()))
    app.cleanup_ctx.append(nats_ctx(settings.nats))
    app.cleanup_ctx.append(relay_ctx(settings.postgres, settings.nats, settings.relay))

    async def use_cases(app: web.Application) -> AsyncIterator[None]:
        views = PostgresViews(app[DB])
        app[VIEWS] = views
        app[IDENTITY].revocations = PostgresRevocations(app[DB])
        app[IDENTITY].throttle = LoginThrottle(
            throttle_limits(settings), PostgresLoginFailures(app[DB])
        )

        async def vip_ports(request: web.Request) -> list[dict[str, Any]]:
            ctx = await request_context(request)
            query = ListQuery(kind=KINDS["loadbalancer"], limit=settings.pagination_max_limit)
            page = await views.list_page(query.scoped(None if ctx.admin else ctx.project_id))
            return [vip_port_body(json.loads(body)) for body in page.bodies]

        app[NEUTRON] = NeutronApi(settings.network.subnets, vip_ports)

        async def first_quota_record(project_id: str) -> None:
            quotas = PostgresQuotaLimits(PostgresEventStore(app[DB]))
            await quotas.execute(project_id, SetQuota({}), Metadata(actor="api:quota"))

        record_quota = first_quota_record if settings.auth_strategy != "noauth" else None
        abilities = app[ABILITIES]
        app[USECASES] = LoadBalancing(
            LoadBalancerRepository(PostgresEventStore(app[DB])),
            views,
            QuotaGuard(views, settings.quota.model_dump(), record_quota),
            Config(
                network=settings.network,
                reserved_ips=frozenset(settings.reserved_ips),
                provider=settings.provider,
                topology=settings.loadbalancer_topology,
                abilities=abilities,
                udp_dataplane=settings.udp_dataplane or abilities.udp,
            ),
            tls=barbican.tls_references(app),
            security_groups=PostgresSecurityGroups(app[DB]),
        )
        yield

    app.cleanup_ctx.append(use_cases)
    return app
