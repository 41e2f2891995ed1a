"""``/lbaas/quotas``: stored quotas (list, show, set, reset) and the configured defaults.

Reads answer from ``quota_view`` and settings; writes go through ``QuotaAdministration`` on
the project's ``quota-<project_id>`` stream. Project ids in paths are Keystone-style ids.
"""

from __future__ import annotations

import re
from typing import Any, Final

from aiohttp import web

from libs.common.errors import ValidationFailed
from libs.common.eventstore import PostgresEventStore
from libs.common.service import DB
from services.api.adapters.quotas import PostgresQuotaLimits
from services.api.domain.kinds import Kind
from services.api.domain.policy import Action, enforce
from services.api.domain.queries import Page
from services.api.domain.quota_limits import quota_body
from services.api.domain.quota_usecases import QuotaAdministration
from services.api.http import reading, writing
from services.api.http.bodies import read_input
from services.api.http.context import request_context
from services.api.http.deps import SETTINGS, VIEWS
from services.api.http.query import parse_list_query
from services.api.http.responses import empty, encoded
from services.api.http.routing import ApiRouter, path_id
from services.api.http.schemas.quota import QuotaUpdate

# Only for list parsing and links: quotas filter on project_id alone.
QUOTA: Final = Kind(
    key="quota", singular="quota", plural="quotas", label="Quota", attributes={"project_id": "str"}
)
ID = "project_id"
DEFAULTS_PROJECT: Final = "defaults"
_PROJECT_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _project(request: web.Request) -> str:
    project_id = path_id(request, ID)
    if not _PROJECT_ID.match(project_id):
        raise ValidationFailed(f"Invalid project id '{project_id}'.")
    return project_id


def _defaults(request: web.Request) -> dict[str, int]:
    return request.app[SETTINGS].quota.model_dump()


def administration(request: web.Request) -> QuotaAdministration:
    repo = PostgresQuotaLimits(PostgresEventStore(request.app[DB]))
    return QuotaAdministration(repo, _defaults(request))


async def list_quotas(request: web.Request) -> web.StreamResponse:
    """Stored quotas only (stored values; null means the default), the caller's own unless it
    may read every project's quota."""
    ctx = await request_context(request)
    query = parse_list_query(QUOTA, request.query, request.app[SETTINGS].pagination_max_limit)
    project_id = query.project_id
    if not ctx.reads_quota_globally:
        enforce(ctx, Action.READ_QUOTA, ctx.project_id)
        project_id = ctx.project_id
    rows = await request.app[VIEWS].quota_page(
        project_id, query.marker, query.limit, query.page_reverse
    )
    quotas: list[dict[str, Any]] = [quota_body(p, body) for p, body in rows]
    page = Page(bodies=[], ids=[p for p, _ in rows])
    links = reading.page_links(request, query, page)
    return encoded({"quotas": quotas, "quotas_links": links})


async def show_quota(request: web.Request) -> web.StreamResponse:
    """The project's effective quota (stored limits, else the defaults)."""
    ctx = await request_context(request)
    project_id = _project(request)
    enforce(ctx, Action.READ_QUOTA, project_id)
    limits = await request.app[VIEWS].quota_limits(project_id)
    return encoded({"quota": quota_body(project_id, limits, _defaults(request))})


async def show_project_defaults(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    project_id = _project(request)
    enforce(ctx, Action.READ_QUOTA, project_id)
    return encoded({"quota": quota_body(project_id, {}, _defaults(request))})


async def show_defaults(request: web.Request) -> web.StreamResponse:
    """Octavia reads this as the quota of a project named "defaults"."""
    ctx = await request_context(request)
    enforce(ctx, Action.READ_QUOTA, ctx.project_id)
    limits = await request.app[VIEWS].quota_limits(DEFAULTS_PROJECT)
    return encoded({"quota": quota_body(DEFAULTS_PROJECT, limits, _defaults(request))})


async def update_quota(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    project_id = _project(request)
    body = await read_input(request, QuotaUpdate, "quota")
    quota = await administration(request).set_limits(
        ctx, project_id, body.given(), writing.metadata(request, ctx)
    )
    return encoded({"quota": quota}, 202)


async def reset_quota(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    await administration(request).reset(ctx, _project(request), writing.metadata(request, ctx))
    return empty(202)


def register(api: ApiRouter) -> None:
    tag = "quotas"
    one = f"/quotas/{{{ID}}}"
    api.lbaas(
        "GET", "/quotas", list_quotas, summary="List stored quotas", tag=tag, response_key="quotas"
    )
    # Before /quotas/{project_id}, which would take "defaults" for a project id.
    api.lbaas(
        "GET",
        "/quotas/defaults",
        show_defaults,
        summary="Default quota",
        tag=tag,
        response_key="quota",
    )
    api.lbaas(
        "GET", one, show_quota, summary="Show a project's quota", tag=tag, response_key="quota"
    )
    api.lbaas(
        "GET",
        f"{one}/default",
        show_project_defaults,
        summary="Default quota (for a project)",
        tag=tag,
        response_key="quota",
    )
    api.lbaas(
        "PUT",
        one,
        update_quota,
        summary="Set a project's quota",
        tag=tag,
        status=202,
        request=QuotaUpdate,
        envelope="quota",
        response_key="quota",
    )
    api.lbaas(
        "DELETE",
        one,
        reset_quota,
        summary="Reset a project's quota to the defaults",
        tag=tag,
        status=202,
    )
