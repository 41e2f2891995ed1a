"""The key manager's use cases (a Barbican v1 subset) and the TLS reference checks of
listeners and pools.

Policy is the API's: a project's members store, read and delete its secrets and containers;
its readers see metadata; only members (and admins) read payloads; another project's objects
are hidden (404). Containers follow Barbican's types: ``generic``, ``certificate``
(certificate, private_key, private_key_passphrase, intermediates) and ``rsa``. Deleting an
object a listener or pool uses is refused (409).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import asyncpg

from libs.common.errors import Forbidden, NotFound, ValidationFailed
from libs.common.events import Metadata
from libs.common.secretstore import (
    ContainerRecord,
    MaterialError,
    SecretRecord,
)
from libs.common.tls import CaBundle, KeyPair, Revocations, check_ciphers
from services.api.domain.policy import FORBIDDEN_MESSAGE, Action, RequestContext, enforce

CONTENT_TYPES: Final = frozenset({"text/plain", "application/octet-stream"})
SECRET_TYPES: Final = frozenset(
    {"symmetric", "public", "private", "passphrase", "certificate", "opaque"}
)
CONTAINER_NAMES: Final[dict[str, frozenset[str] | None]] = {
    "generic": None,
    "certificate": frozenset(
        {"certificate", "private_key", "private_key_passphrase", "intermediates"}
    ),
    "rsa": frozenset({"public_key", "private_key", "private_key_passphrase"}),
}
MAX_PAYLOAD_BYTES: Final = 65536

# Listener and pool attributes that name key manager objects, by what they must hold.
KEYPAIR_FIELDS: Final = ("default_tls_container_ref", "tls_container_ref")
KEYPAIR_LIST_FIELDS: Final = ("sni_container_refs",)
CA_FIELDS: Final = ("client_ca_tls_container_ref", "ca_tls_container_ref")
CRL_FIELDS: Final = ("client_crl_container_ref", "crl_container_ref")

DeleteGuard = Callable[[asyncpg.Connection, Sequence[str]], Awaitable[str | None]]


class SecretVault(Protocol):
    """The storage the key manager needs (libs.common.secretstore.PostgresSecretStore)."""

    async def add_secret(self, record: SecretRecord, payload: bytes, meta: Metadata) -> None: ...
    async def secret(self, secret_id: str) -> SecretRecord | None: ...
    async def payload(self, secret_id: str) -> bytes: ...
    async def list_secrets(
        self, project_id: str, limit: int, offset: int, name: str | None = None
    ) -> tuple[list[SecretRecord], int]: ...
    async def delete_secret(
        self, record: SecretRecord, meta: Metadata, guard: DeleteGuard
    ) -> None: ...
    async def add_container(self, record: ContainerRecord, meta: Metadata) -> None: ...
    async def container(self, container_id: str) -> ContainerRecord | None: ...
    async def list_containers(
        self, project_id: str, limit: int, offset: int, name: str | None = None
    ) -> tuple[list[ContainerRecord], int]: ...
    async def delete_container(
        self, record: ContainerRecord, meta: Metadata, guard: DeleteGuard
    ) -> None: ...
    async def keypair(self, ref: str, project_id: str | None, what: str) -> KeyPair: ...
    async def ca_bundle(self, ref: str, project_id: str | None, what: str) -> CaBundle: ...
    async def crl(self, ref: str, project_id: str | None, what: str) -> Revocations: ...


@dataclass(frozen=True)
class NewSecret:
    """A validated store request; ``payload`` is the decoded bytes."""

    id: str
    payload: bytes
    content_type: str
    secret_type: str = "opaque"
    name: str | None = None
    algorithm: str | None = None
    bit_length: int | None = None
    mode: str | None = None
    expiration: datetime | None = None


@dataclass(frozen=True)
class NewContainer:
    id: str
    type: str
    secret_refs: tuple[tuple[str, str], ...]
    name: str | None = None


def _not_found(kind: str) -> NotFound:
    return NotFound(f"{kind} not found.")


def _owner(ctx: RequestContext) -> str:
    if ctx.project_id is None:
        raise Forbidden(FORBIDDEN_MESSAGE)
    return ctx.project_id


class KeyManager:
    """Secrets and containers of the caller's project."""

    def __init__(self, vault: SecretVault, users: DeleteGuard) -> None:
        self._vault = vault
        self._users = users

    # -- secrets -------------------------------------------------------------------------------

    async def store_secret(
        self, ctx: RequestContext, new: NewSecret, meta: Metadata
    ) -> SecretRecord:
        project_id = _owner(ctx)
        enforce(ctx, Action.WRITE, project_id)
        if new.content_type not in CONTENT_TYPES:
            raise ValidationFailed(
                f"payload_content_type {new.content_type} is not supported; use one of "
                f"{', '.join(sorted(CONTENT_TYPES))}."
            )
        if new.secret_type not in SECRET_TYPES:
            raise ValidationFailed(f"secret_type {new.secret_type} is not supported.")
        if not new.payload:
            raise ValidationFailed("The payload is empty.")
        if len(new.payload) > MAX_PAYLOAD_BYTES:
            raise ValidationFailed(f"The payload is larger than {MAX_PAYLOAD_BYTES} bytes.")
        now = datetime.now(UTC)
        if new.expiration is not None and new.expiration <= now:
            raise ValidationFailed("The expiration is in the past.")
        record = SecretRecord(
            id=new.id,
            project_id=project_id,
            creator_id=ctx.user_id,
            name=new.name,
            secret_type=new.secret_type,
            algorithm=new.algorithm,
            bit_length=new.bit_length,
            mode=new.mode,
            content_type=new.content_type,
            expiration=new.expiration,
            created_at=now,
            updated_at=now,
        )
        await self._vault.add_secret(record, new.payload, meta)
        return record

    async def secret(self, ctx: RequestContext, secret_id: str, action: Action) -> SecretRecord:
        """The secret if ``ctx`` may ``action`` it; 404 when absent or another project's."""
        record = await self._vault.secret(secret_id)
        if record is None:
            raise _not_found("Secret")
        enforce(ctx, action, record.project_id, hidden=_not_found("Secret"))
        return record

    async def payload(self, ctx: RequestContext, secret_id: str) -> tuple[SecretRecord, bytes]:
        """Decrypting is for the project's members (and admins)."""
        record = await self.secret(ctx, secret_id, Action.WRITE)
        return record, await self._vault.payload(record.id)

    async def list_secrets(
        self, ctx: RequestContext, limit: int, offset: int, name: str | None
    ) -> tuple[list[SecretRecord], int]:
        """The caller's own project's secrets (Barbican lists per project, admins too)."""
        project_id = _owner(ctx)
        enforce(ctx, Action.READ, project_id)
        return await self._vault.list_secrets(project_id, limit, offset, name)

    async def delete_secret(self, ctx: RequestContext, secret_id: str, meta: Metadata) -> None:
        record = await self.secret(ctx, secret_id, Action.WRITE)
        await self._vault.delete_secret(record, meta, self._users)

    # -- containers ----------------------------------------------------------------------------

    async def create_container(
        self, ctx: RequestContext, new: NewContainer, meta: Metadata
    ) -> ContainerRecord:
        project_id = _owner(ctx)
        enforce(ctx, Action.WRITE, project_id)
        allowed = CONTAINER_NAMES.get(new.type, frozenset())
        if new.type not in CONTAINER_NAMES:
            raise ValidationFailed(
                f"Container type {new.type} is not supported; use one of "
                f"{', '.join(sorted(CONTAINER_NAMES))}."
            )
        names = [name for name, _ in new.secret_refs]
        if len(set(names)) != len(names):
            raise ValidationFailed("Duplicate reference names are not allowed.")
        if allowed is not None:
            unknown = sorted(set(names) - allowed)
            if unknown:
                raise ValidationFailed(
                    f"{', '.join(unknown)} is not a valid reference name for {new.type} "
                    f"containers (use {', '.join(sorted(allowed))})."
                )
        if new.type == "certificate" and "certificate" not in names:
            raise ValidationFailed("A certificate container needs a 'certificate' reference.")
        for name, secret_id in new.secret_refs:
            held = await self._vault.secret(secret_id)
            if held is None or held.project_id != project_id:
                raise NotFound(f"Secret provided for '{name}' doesn't exist.")
        now = datetime.now(UTC)
        container = ContainerRecord(
            id=new.id,
            project_id=project_id,
            creator_id=ctx.user_id,
            name=new.name,
            type=new.type,
            created_at=now,
            updated_at=now,
            secret_ids=dict(new.secret_refs),
        )
        await self._vault.add_container(container, meta)
        return container

    async def container(
        self, ctx: RequestContext, container_id: str, action: Action
    ) -> ContainerRecord:
        record = await self._vault.container(container_id)
        if record is None:
            raise _not_found("Container")
        enforce(ctx, action, record.project_id, hidden=_not_found("Container"))
        return record

    async def list_containers(
        self, ctx: RequestContext, limit: int, offset: int, name: str | None
    ) -> tuple[list[ContainerRecord], int]:
        project_id = _owner(ctx)
        enforce(ctx, Action.READ, project_id)
        return await self._vault.list_containers(project_id, limit, offset, name)

    async def delete_container(
        self, ctx: RequestContext, container_id: str, meta: Metadata
    ) -> None:
        record = await self.container(ctx, container_id, Action.WRITE)
        await self._vault.delete_container(record, meta, self._users)


def _tls_dicts(value: Any) -> Iterator[Mapping[str, Any]]:
    """Every dict in a request tree (an LB single-call create nests listeners and pools)."""
    if isinstance(value, Mapping):
        yield value
        for item in value.values():
            yield from _tls_dicts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tls_dicts(item)


class TlsReferences:
    """Checks, before anything is written, every key manager reference and cipher string a
    listener, pool or single-call create carries (400 naming the field and the reason)."""

    def __init__(self, vault: SecretVault | None) -> None:
        self._vault = vault

    async def check(self, fields: Mapping[str, Any], project_id: str) -> None:
        """Raise ValidationFailed for the first unusable reference or cipher string.

        A listener of another protocol is left to the structural rules, which refuse TLS
        attributes there in Octavia's words."""
        for item in _tls_dicts(fields):
            if item.get("protocol_port") is not None and item.get("protocol") not in (
                None,
                "TERMINATED_HTTPS",
            ):
                continue
            if self._vault is None:
                _refuse_references(item)
            else:
                await self._check_one(self._vault, item, project_id)

    async def _check_one(
        self, vault: SecretVault, item: Mapping[str, Any], project_id: str
    ) -> None:
        ca: CaBundle | None = None
        crl: tuple[str, Revocations] | None = None
        try:
            for field in KEYPAIR_FIELDS:
                if isinstance(item.get(field), str):
                    await vault.keypair(item[field], project_id, f"{field} {item[field]}")
            for field in KEYPAIR_LIST_FIELDS:
                for ref in item.get(field) or ():
                    if isinstance(ref, str):
                        await vault.keypair(ref, project_id, f"{field} {ref}")
            for field in CA_FIELDS:
                if isinstance(item.get(field), str):
                    ca = await vault.ca_bundle(item[field], project_id, f"{field} {item[field]}")
            for field in CRL_FIELDS:
                if isinstance(item.get(field), str):
                    what = f"{field} {item[field]}"
                    crl = (what, await vault.crl(item[field], project_id, what))
            if ca is not None and crl is not None:
                crl[1].check_issued_by(ca, crl[0])
            if isinstance(item.get("tls_ciphers"), str):
                check_ciphers(item["tls_ciphers"])
        except MaterialError as exc:
            raise ValidationFailed(f"Validation failure: {exc}") from None


def _refuse_references(item: Mapping[str, Any]) -> None:
    for field in (*KEYPAIR_FIELDS, *KEYPAIR_LIST_FIELDS, *CA_FIELDS, *CRL_FIELDS):
        if item.get(field):
            raise ValidationFailed(
                f"Validation failure: {field}: this deployment has no key manager configured."
            )
