"""``/v1``: the Barbican v1 subset (secrets and containers) that ``openstack secret ...``,
python-barbicanclient and openstacksdk's key-manager proxy speak, on the API's own port.

The Keystone catalog advertises it as ``key-manager`` at ``<public url>/v1`` (that versioned
URL spares keystoneauth a discovery of ``GET /``, which is Octavia's version list). References
are full URLs, ``<public url>/v1/secrets/<id>`` and ``<public url>/v1/containers/<id>``.
Errors use Barbican's body (the error middleware, for every ``/v1`` path). Payloads appear
only in ``/payload`` answers (or a GET that accepts no JSON, Barbican's legacy decrypt).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from libs.common.errors import NotFound, ValidationFailed
from libs.common.secretstore import Keyring, PostgresSecretStore, parse_ref
from libs.common.service import DB
from services.api.adapters.secrets import first_user
from services.api.domain.policy import Action
from services.api.domain.secrets import KeyManager, NewContainer, NewSecret, TlsReferences
from services.api.http import writing
from services.api.http.context import request_context
from services.api.http.deps import SETTINGS
from services.api.http.reading import base_url
from services.api.http.routing import ApiRouter, path_id
from services.api.settings import ApiSettings

PREFIX: Final = "/v1"
MAX_LIMIT: Final = 100
DEFAULT_LIMIT: Final = 10
_TAG: Final = "key-manager"


class KeyManagerDisabled(NotFound):
    """No secret key is configured (FULCRUM_SECRET_KEYS): the deployment offers no key
    manager, so its resources do not exist (404; the catalog does not list it either)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretCreate(_Body):
    name: str | None = Field(default=None, max_length=255)
    payload: str | None = None
    payload_content_type: str | None = Field(default=None, max_length=255)
    payload_content_encoding: str | None = Field(default=None, max_length=255)
    secret_type: str | None = None
    algorithm: str | None = Field(default=None, max_length=255)
    bit_length: int | None = Field(default=None, ge=0)
    mode: str | None = Field(default=None, max_length=255)
    expiration: datetime | None = None


class SecretRefInput(_Body):
    name: str = Field(max_length=255)
    secret_ref: str = Field(max_length=1024)


class ContainerCreate(_Body):
    name: str | None = Field(default=None, max_length=255)
    type: str = "generic"
    secret_refs: list[SecretRefInput] = Field(default_factory=list)


@functools.lru_cache(maxsize=4)
def _keyring(keys: str) -> Keyring:
    return Keyring.from_setting(keys)


def key_manager(request: web.Request) -> KeyManager:
    """The use cases over this app's database and the operator's keys."""
    return KeyManager(store_for(request.app), first_user)


def store_for(app: web.Application) -> PostgresSecretStore:
    """The secret store of ``app``; raises KeyManagerDisabled without configured keys."""
    settings: ApiSettings = app[SETTINGS]
    if not settings.secret_keys.strip():
        raise KeyManagerDisabled("This deployment offers no key manager.")
    return PostgresSecretStore(app[DB], _keyring(settings.secret_keys))


def catalog_entries(settings: ApiSettings) -> tuple[tuple[str, str, str], ...]:
    """The Keystone catalog's ``key-manager`` entry, when the deployment has keys."""
    return (("key-manager", "barbican", PREFIX),) if settings.secret_keys.strip() else ()


def tls_references(app: web.Application) -> TlsReferences:
    """The listener/pool reference checks over ``app``'s store (refusing every reference
    when no key is configured)."""
    settings: ApiSettings = app[SETTINGS]
    if not settings.secret_keys.strip():
        return TlsReferences(None)
    return TlsReferences(store_for(app))


def _time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() if value else None


def _ref(request: web.Request, kind: str, object_id: str) -> str:
    return f"{base_url(request)}{PREFIX}/{kind}/{object_id}"


def _secret_body(request: web.Request, record: Any) -> dict[str, Any]:
    return {
        "secret_ref": _ref(request, "secrets", record.id),
        "name": record.name,
        "status": "ACTIVE",
        "secret_type": record.secret_type,
        "algorithm": record.algorithm,
        "bit_length": record.bit_length,
        "mode": record.mode,
        "expiration": _time(record.expiration),
        "content_types": {"default": record.content_type},
        "created": _time(record.created_at),
        "updated": _time(record.updated_at),
        "creator_id": record.creator_id,
        "consumers": [],
    }


def _container_body(request: web.Request, record: Any) -> dict[str, Any]:
    return {
        "container_ref": _ref(request, "containers", record.id),
        "name": record.name,
        "type": record.type,
        "status": "ACTIVE",
        "secret_refs": [
            {"name": name, "secret_ref": _ref(request, "secrets", secret_id)}
            for name, secret_id in sorted(record.secret_ids.items())
        ],
        "created": _time(record.created_at),
        "updated": _time(record.updated_at),
        "creator_id": record.creator_id,
        "consumers": [],
    }


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(value).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def _parse(request: web.Request, model: type[_Body]) -> Any:
    raw = await request.read()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"]) or "body"
        raise ValidationFailed(f"Invalid input for field '{where}': {error['msg']}.") from None


def _page_params(request: web.Request) -> tuple[int, int, str | None]:
    def number(name: str, default: int) -> int:
        try:
            return max(0, int(request.query.get(name, default)))
        except ValueError:
            raise ValidationFailed(f"{name} must be a non-negative integer.") from None

    return (
        min(number("limit", DEFAULT_LIMIT), MAX_LIMIT),
        number("offset", 0),
        request.query.get("name"),
    )


def _listing(
    request: web.Request, key: str, items: list[dict[str, Any]], total: int, limit: int, offset: int
) -> web.Response:
    """Barbican's page: items, total, and next/previous links by limit and offset."""
    body: dict[str, Any] = {key: items, "total": total}
    url = f"{base_url(request)}{PREFIX}/{key}"
    if limit and offset + limit < total:
        body["next"] = f"{url}?limit={limit}&offset={offset + limit}"
    if offset > 0:
        body["previous"] = f"{url}?limit={limit}&offset={max(0, offset - max(limit, 1))}"
    return _json(body)


def _decoded_payload(body: SecretCreate) -> tuple[bytes, str]:
    if body.payload is None:
        raise ValidationFailed("A payload is required (two-step uploads are not supported).")
    content_type = (body.payload_content_type or "").split(";", 1)[0].strip().lower()
    if not content_type:
        raise ValidationFailed("payload_content_type is required with a payload.")
    encoding = (body.payload_content_encoding or "").strip().lower()
    if content_type == "application/octet-stream":
        if encoding != "base64":
            raise ValidationFailed(
                "payload_content_encoding must be base64 for application/octet-stream."
            )
        try:
            return base64.b64decode(body.payload, validate=True), content_type
        except (binascii.Error, ValueError):
            raise ValidationFailed("The payload is not valid base64.") from None
    if encoding:
        raise ValidationFailed(f"payload_content_encoding is not valid for {content_type}.")
    return body.payload.encode(), content_type


# -- handlers ----------------------------------------------------------------------------------


async def version(request: web.Request) -> web.StreamResponse:
    """The key-manager v1 version document (open, like every version document)."""
    return _json(
        {
            "version": {
                "id": "v1",
                "status": "CURRENT",
                "min_version": "1.0",
                "max_version": "1.1",
                "links": [{"rel": "self", "href": f"{base_url(request)}{PREFIX}/"}],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.key-manager-v1+json",
                    }
                ],
            }
        }
    )


async def store_secret(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    manager = key_manager(request)
    body: SecretCreate = await _parse(request, SecretCreate)
    payload, content_type = _decoded_payload(body)
    record = await manager.store_secret(
        ctx,
        NewSecret(
            id=str(uuid.uuid4()),
            payload=payload,
            content_type=content_type,
            secret_type=body.secret_type or "opaque",
            name=body.name,
            algorithm=body.algorithm,
            bit_length=body.bit_length,
            mode=body.mode,
            expiration=body.expiration,
        ),
        writing.metadata(request, ctx),
    )
    ref = _ref(request, "secrets", record.id)
    return _json({"secret_ref": ref}, 201, {"Location": ref})


async def list_secrets(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    limit, offset, name = _page_params(request)
    records, total = await key_manager(request).list_secrets(ctx, limit, offset, name)
    items = [_secret_body(request, r) for r in records]
    return _listing(request, "secrets", items, total, limit, offset)


def _wants_payload(request: web.Request) -> str | None:
    """Barbican v1's legacy decrypt: a GET accepting a payload type but not JSON."""
    accept = request.headers.get("Accept", "").lower()
    wanted = [p.split(";", 1)[0].strip() for p in accept.split(",") if p.strip()]
    if not wanted or any(w in ("application/json", "*/*", "application/*") for w in wanted):
        return None
    return wanted[0]


async def _payload_response(request: web.Request, secret_id: str) -> web.StreamResponse:
    ctx = await request_context(request)
    record, payload = await key_manager(request).payload(ctx, secret_id)
    return web.Response(
        body=payload,
        content_type=record.content_type,
        headers={"Cache-Control": "no-store"},
    )


async def show_secret(request: web.Request) -> web.StreamResponse:
    secret_id = _object_id(request, "secret_id", "Secret")
    if _wants_payload(request) is not None:
        return await _payload_response(request, secret_id)
    ctx = await request_context(request)
    record = await key_manager(request).secret(ctx, secret_id, Action.READ)
    return _json(_secret_body(request, record))


async def secret_payload(request: web.Request) -> web.StreamResponse:
    return await _payload_response(request, _object_id(request, "secret_id", "Secret"))


async def delete_secret(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    secret_id = _object_id(request, "secret_id", "Secret")
    await key_manager(request).delete_secret(ctx, secret_id, writing.metadata(request, ctx))
    return web.Response(status=204)


async def create_container(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    manager = key_manager(request)
    body: ContainerCreate = await _parse(request, ContainerCreate)
    refs: list[tuple[str, str]] = []
    for item in body.secret_refs:
        parsed = parse_ref(item.secret_ref)
        if parsed is None or parsed.kind not in (None, "secrets"):
            raise ValidationFailed(f"secret_ref of '{item.name}' is not a secret reference.")
        refs.append((item.name, parsed.id))
    record = await manager.create_container(
        ctx,
        NewContainer(id=str(uuid.uuid4()), type=body.type, secret_refs=tuple(refs), name=body.name),
        writing.metadata(request, ctx),
    )
    ref = _ref(request, "containers", record.id)
    return _json({"container_ref": ref}, 201, {"Location": ref})


async def list_containers(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    limit, offset, name = _page_params(request)
    records, total = await key_manager(request).list_containers(ctx, limit, offset, name)
    items = [_container_body(request, r) for r in records]
    return _listing(request, "containers", items, total, limit, offset)


async def show_container(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    container_id = _object_id(request, "container_id", "Container")
    record = await key_manager(request).container(ctx, container_id, Action.READ)
    return _json(_container_body(request, record))


async def delete_container(request: web.Request) -> web.StreamResponse:
    ctx = await request_context(request)
    container_id = _object_id(request, "container_id", "Container")
    await key_manager(request).delete_container(ctx, container_id, writing.metadata(request, ctx))
    return web.Response(status=204)


def _object_id(request: web.Request, param: str, label: str) -> str:
    try:
        return str(uuid.UUID(path_id(request, param)))
    except ValueError:
        raise NotFound(f"{label} not found.") from None


def register(api: ApiRouter) -> None:
    """Routes with and without the trailing slash python-barbicanclient adds to POSTs."""
    for path in (PREFIX, f"{PREFIX}/"):
        api.exact("GET", path, version, summary="Key manager version", tag=_TAG)
    for kind, create, listing in (
        ("secrets", store_secret, list_secrets),
        ("containers", create_container, list_containers),
    ):
        for path in (f"{PREFIX}/{kind}", f"{PREFIX}/{kind}/"):
            api.exact("POST", path, create, summary=f"Create ({kind})", tag=_TAG, status=201)
            api.exact("GET", path, listing, summary=f"List {kind}", tag=_TAG)
    one_secret = f"{PREFIX}/secrets/{{secret_id}}"
    api.exact("GET", one_secret, show_secret, summary="Show a secret", tag=_TAG)
    api.exact("DELETE", one_secret, delete_secret, summary="Delete a secret", tag=_TAG, status=204)
    api.exact(
        "GET", f"{one_secret}/payload", secret_payload, summary="A secret's payload", tag=_TAG
    )
    one_container = f"{PREFIX}/containers/{{container_id}}"
    api.exact("GET", one_container, show_container, summary="Show a container", tag=_TAG)
    api.exact(
        "DELETE",
        one_container,
        delete_container,
        summary="Delete a container",
        tag=_TAG,
        status=204,
    )
