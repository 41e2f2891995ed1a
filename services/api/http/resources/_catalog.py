"""The routes every catalog section shares (flavors, flavor profiles, availability zones and
their profiles): list, show, create, update, delete.

Reads come from the views; writes go through ``CatalogAdministration`` over the app's pool
(it holds nothing else, so it is built per request).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from libs.common.errors import NotFound
from libs.common.eventstore import PostgresEventStore
from libs.common.service import DB
from services.api.adapters.catalog import PostgresCatalog
from services.api.domain.catalog import Section
from services.api.domain.catalog_usecases import CatalogAdministration
from services.api.domain.kinds import Kind
from services.api.domain.policy import Action, enforce
from services.api.http import reading, writing
from services.api.http.bodies import read_input
from services.api.http.context import request_context
from services.api.http.deps import ABILITIES, VIEWS
from services.api.http.query import fields_of
from services.api.http.responses import empty, encoded, enveloped, select_fields
from services.api.http.routing import ApiRouter, path_id
from services.api.http.schemas import Input


def administration(request: web.Request) -> CatalogAdministration:
    return CatalogAdministration(
        PostgresCatalog(PostgresEventStore(request.app[DB])), request.app[ABILITIES]
    )


def _show(kind: Kind, read: Action, param: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        enforce(ctx, read, ctx.project_id)
        key = path_id(request, param)
        body = await request.app[VIEWS].entry(kind, key)
        if body is None:
            raise NotFound.resource(kind.label, key)
        fields = fields_of(request.query) if request.query_string else ()
        return enveloped(kind.singular, select_fields(body, fields))

    return handler


def _create(kind: Kind, section: Section, schema: type[Input]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        body = await read_input(request, schema, kind.singular)
        created = await administration(request).create(
            ctx,
            section,
            body.model_dump(mode="json", exclude_unset=True),
            writing.metadata(request, ctx),
        )
        return encoded({kind.singular: created}, 201)

    return handler


def _update(kind: Kind, section: Section, schema: type[Input], param: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        key = path_id(request, param)
        body = await read_input(request, schema, kind.singular)
        updated = await administration(request).update(
            ctx, section, key, body.given(), writing.metadata(request, ctx)
        )
        return encoded({kind.singular: updated})

    return handler


def _delete(section: Section, param: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = await request_context(request)
        await administration(request).delete(
            ctx, section, path_id(request, param), writing.metadata(request, ctx)
        )
        return empty(204)

    return handler


def register_section(
    api: ApiRouter,
    *,
    kind: Kind,
    section: Section,
    path: str,
    param: str,
    create: type[Input],
    update: type[Input],
    read: Action,
) -> None:
    """The five routes of one section under ``path`` (``/flavors``), one entry at
    ``path/{param}``; reading needs ``read``, writing the admin role."""
    tag = kind.plural
    one = f"{path}/{{{param}}}"
    label = kind.label.lower()
    api.lbaas(
        "GET",
        path,
        reading.unscoped_listing(kind, read),
        summary=f"List {kind.label.lower()}s",
        tag=tag,
        response_key=kind.plural,
    )
    api.lbaas(
        "POST",
        path,
        _create(kind, section, create),
        summary=f"Create a {label}",
        tag=tag,
        status=201,
        request=create,
        envelope=kind.singular,
        response_key=kind.singular,
    )
    api.lbaas(
        "GET",
        one,
        _show(kind, read, param),
        summary=f"Show a {label}",
        tag=tag,
        response_key=kind.singular,
    )
    api.lbaas(
        "PUT",
        one,
        _update(kind, section, update, param),
        summary=f"Update a {label}",
        tag=tag,
        request=update,
        envelope=kind.singular,
        response_key=kind.singular,
    )
    api.lbaas(
        "DELETE", one, _delete(section, param), summary=f"Delete a {label}", tag=tag, status=204
    )
