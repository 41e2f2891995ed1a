"""The key manager's storage: secrets encrypted at rest, certificate containers, and the
resolution of container references into TLS material (for the API's checks and the
provisioner's certificate delivery).

Secrets are *not* event-sourced: a plain ``secrets`` table holds each payload sealed with
AES-256-GCM (the secret's id as associated data, so a sealed payload cannot be moved to
another row), under the newest of the operator's keys; a DELETE removes the row for real.
Each change also appends a references-only audit event (libs/common/events/secret.py) in the
same transaction. Keys rotate: encryption uses the first key given, decryption finds a
payload's key by ``key_id``, and a read re-seals a payload found under an older key; an old
key can be dropped once no row is sealed under it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libs.common.errors import (
    ConfigurationError,
    Conflict,
    FulcrumError,
    InfrastructureError,
    NotFound,
)
from libs.common.events import Metadata
from libs.common.events import secret as ev
from libs.common.eventstore import PostgresEventStore
from libs.common.streams import StreamId
from libs.common.tls import (
    CaBundle,
    KeyPair,
    Revocations,
    TlsMaterialError,
    load_ca_bundle,
    load_crl,
    load_keypair,
    load_pkcs12,
    looks_like_pkcs12,
)

__all__ = [
    "ContainerRecord",
    "Keyring",
    "PostgresSecretStore",
    "SecretRecord",
    "SecretRef",
    "MaterialError",
    "SecretKeyMissing",
    "UnusableReference",
    "new_key",
    "parse_ref",
]

KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_AAD_PREFIX: Final = b"fulcrum-secret:"
_UUID_TAIL: Final = re.compile(
    r"(?:^|/)(?:(secrets|containers)/)?"
    r"([0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12})/?$"
)


class SecretKeyMissing(InfrastructureError):
    """A payload is sealed under a key the operator no longer configures."""


def new_key() -> str:
    """A fresh key in the settings' format (URL-safe base64 of 32 random bytes)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode()


class Keyring:
    """The operator's keys, newest first; ``key_id`` is a digest prefix, never the key."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigurationError("the key manager needs at least one key")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise ConfigurationError(f"secret keys must be {KEY_BYTES} bytes")
        self._keys = {self.key_id(k): AESGCM(k) for k in keys}
        self.newest_id = self.key_id(keys[0])

    @staticmethod
    def key_id(key: bytes) -> str:
        return hashlib.sha256(b"fulcrum-key-id:" + key).hexdigest()[:16]

    @classmethod
    def from_setting(cls, text: str) -> Keyring:
        """Comma- or whitespace-separated URL-safe base64 keys, newest first.

        Raises ConfigurationError (naming the position, never the value) for a malformed key."""
        keys = []
        for index, item in enumerate(re.split(r"[,\s]+", text.strip())):
            if not item:
                continue
            try:
                padded = item + "=" * (-len(item) % 4)
                keys.append(base64.b64decode(padded, altchars=b"-_", validate=True))
            except (binascii.Error, ValueError):
                raise ConfigurationError(f"secret key #{index + 1} is not base64") from None
        return cls(keys)

    def seal(self, secret_id: str, plaintext: bytes) -> tuple[str, bytes]:
        """(key_id, nonce || ciphertext) under the newest key, bound to ``secret_id``."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self.newest_id].encrypt(
            nonce, plaintext, _AAD_PREFIX + secret_id.encode()
        )
        return self.newest_id, nonce + sealed

    def open(self, secret_id: str, key_id: str, sealed: bytes) -> bytes:
        """The plaintext; raises SecretKeyMissing for an unknown key or a tampered blob."""
        aead = self._keys.get(key_id)
        if aead is None:
            raise SecretKeyMissing(
                f"secret {secret_id} is sealed under key {key_id}, not configured"
            )
        try:
            return aead.decrypt(
                sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _AAD_PREFIX + secret_id.encode()
            )
        except InvalidTag:
            raise SecretKeyMissing(f"secret {secret_id} fails authentication") from None


@dataclass(frozen=True)
class SecretRecord:
    """A secret's metadata (never its payload)."""

    id: str
    project_id: str
    secret_type: str
    content_type: str
    created_at: datetime
    updated_at: datetime
    creator_id: str | None = None
    name: str | None = None
    algorithm: str | None = None
    bit_length: int | None = None
    mode: str | None = None
    expiration: datetime | None = None


@dataclass(frozen=True)
class ContainerRecord:
    """A container; ``secret_ids`` maps each reference name to a secret id."""

    id: str
    project_id: str
    type: str
    created_at: datetime
    updated_at: datetime
    secret_ids: dict[str, str]
    creator_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference: ``kind`` is "secrets", "containers" or None (a bare id)."""

    kind: str | None
    id: str


def parse_ref(ref: str) -> SecretRef | None:
    """``<any base>/v1/containers/<uuid>``, ``.../secrets/<uuid>`` or a bare UUID; the host is
    not checked (clients reach this API under several names). None when no id is found."""
    match = _UUID_TAIL.search(ref.strip())
    if match is None:
        return None
    return SecretRef(match.group(1), str(uuid.UUID(match.group(2))))


class UnusableReference(FulcrumError, ValueError):
    """A reference that cannot serve: unknown, another project's, or unfit material."""


_SECRET_COLUMNS: Final = (
    "id::text AS id, project_id, creator_id, name, secret_type, algorithm, bit_length, mode, "
    "content_type, expiration, created_at, updated_at"
)
_CONTAINER_SQL: Final = (
    "SELECT c.id::text AS id, c.project_id, c.creator_id, c.name, c.type, c.created_at, "
    "c.updated_at, coalesce(jsonb_object_agg(r.name, r.secret_id::text) "
    "FILTER (WHERE r.name IS NOT NULL), '{}'::jsonb)::text AS refs "
    "FROM secret_containers c LEFT JOIN secret_container_refs r ON r.container_id = c.id "
)
# Called inside a delete's transaction with the ids about to go: a reason to refuse, or None.
DeleteGuard = Callable[[asyncpg.Connection, Sequence[str]], Awaitable[str | None]]


def _secret(row: asyncpg.Record) -> SecretRecord:
    return SecretRecord(**dict(row))


def _container(row: asyncpg.Record) -> ContainerRecord:
    data = dict(row)
    refs = json.loads(data.pop("refs"))
    return ContainerRecord(**data, secret_ids=refs)


class PostgresSecretStore:
    """Secrets and containers in Postgres; payloads sealed by ``keyring``."""

    def __init__(self, pool: asyncpg.Pool, keyring: Keyring) -> None:
        self._pool = pool
        self._keyring = keyring
        self._events = PostgresEventStore(pool)

    # -- secrets -------------------------------------------------------------------------------

    async def add_secret(self, record: SecretRecord, payload: bytes, meta: Metadata) -> None:
        """Seal and store ``payload`` with ``record``; the audit event joins the transaction."""
        key_id, sealed = self._keyring.seal(record.id, payload)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO secrets (id, project_id, creator_id, name, secret_type, algorithm, "
                "bit_length, mode, content_type, expiration, key_id, sealed, created_at, "
                "updated_at) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
                "$13, $14)",
                record.id,
                record.project_id,
                record.creator_id,
                record.name,
                record.secret_type,
                record.algorithm,
                record.bit_length,
                record.mode,
                record.content_type,
                record.expiration,
                key_id,
                sealed,
                record.created_at,
                record.updated_at,
            )
            event = ev.SecretStored(
                secret_id=record.id,
                project_id=record.project_id,
                name=record.name,
                secret_type=record.secret_type,
                content_type=record.content_type,
                key_id=key_id,
            )
            await self._events.append(StreamId.secret(record.id), 0, [event], meta, conn=conn)

    async def secret(self, secret_id: str) -> SecretRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_SECRET_COLUMNS} FROM secrets WHERE id = $1::uuid", secret_id
        )
        return _secret(row) if row else None

    async def payload(self, secret_id: str) -> bytes:
        """The decrypted payload (re-sealed under the newest key when found under an older
        one). Raises NotFound for an unknown id, SecretKeyMissing (see there)."""
        row = await self._pool.fetchrow(
            "SELECT key_id, sealed FROM secrets WHERE id = $1::uuid", secret_id
        )
        if row is None:
            raise NotFound(f"Secret {secret_id} not found.")
        plaintext = self._keyring.open(secret_id, row["key_id"], row["sealed"])
        if row["key_id"] != self._keyring.newest_id:
            key_id, sealed = self._keyring.seal(secret_id, plaintext)
            await self._pool.execute(
                "UPDATE secrets SET key_id = $2, sealed = $3 WHERE id = $1::uuid AND key_id = $4",
                secret_id,
                key_id,
                sealed,
                row["key_id"],
            )
        return plaintext

    async def list_secrets(
        self, project_id: str, limit: int, offset: int, name: str | None = None
    ) -> tuple[list[SecretRecord], int]:
        """One page of a project's secrets (oldest first) and the total."""
        rows = await self._pool.fetch(
            f"SELECT {_SECRET_COLUMNS}, count(*) OVER () AS total FROM secrets "
            "WHERE project_id = $1 AND ($2::text IS NULL OR name = $2) "
            "ORDER BY created_at, id LIMIT $3 OFFSET $4",
            project_id,
            name,
            limit,
            offset,
        )
        if not rows:
            total = await self._pool.fetchval(
                "SELECT count(*) FROM secrets WHERE project_id = $1 AND "
                "($2::text IS NULL OR name = $2)",
                project_id,
                name,
            )
        else:
            total = rows[0]["total"] if rows else 0
        records = []
        for row in rows:
            data = dict(row)
            data.pop("total")
            records.append(SecretRecord(**data))
        return records, int(total)

    async def delete_secret(self, record: SecretRecord, meta: Metadata, guard: DeleteGuard) -> None:
        """Delete the row (and its sealed payload); Conflict when a container holds it or
        ``guard`` names a reason; NotFound when it is already gone."""
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT 1 FROM secrets WHERE id = $1::uuid FOR UPDATE", record.id
            )
            if locked is None:
                raise NotFound(f"Secret {record.id} not found.")
            holder = await conn.fetchval(
                "SELECT container_id::text FROM secret_container_refs WHERE secret_id = $1::uuid "
                "LIMIT 1",
                record.id,
            )
            if holder is not None:
                raise Conflict(
                    f"Secret {record.id} is part of container {holder}; delete the container first."
                )
            reason = await guard(conn, [record.id])
            if reason is not None:
                raise Conflict(f"Secret {record.id} is in use by {reason}.")
            await conn.execute("DELETE FROM secrets WHERE id = $1::uuid", record.id)
            event = ev.SecretDeleted(secret_id=record.id, project_id=record.project_id)
            await self._events.append(StreamId.secret(record.id), 1, [event], meta, conn=conn)

    # -- containers ----------------------------------------------------------------------------

    async def add_container(self, record: ContainerRecord, meta: Metadata) -> None:
        """Store the container; the referenced secrets must exist (checked by the caller,
        enforced by the foreign key)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO secret_containers (id, project_id, creator_id, name, type, "
                "created_at, updated_at) VALUES ($1::uuid, $2, $3, $4, $5, $6, $7)",
                record.id,
                record.project_id,
                record.creator_id,
                record.name,
                record.type,
                record.created_at,
                record.updated_at,
            )
            # Lock the secrets: a concurrent delete waits and then sees this container.
            await conn.execute(
                "SELECT 1 FROM secrets WHERE id = ANY($1::uuid[]) FOR SHARE",
                list(record.secret_ids.values()),
            )
            try:
                await conn.executemany(
                    "INSERT INTO secret_container_refs (container_id, name, secret_id) "
                    "VALUES ($1::uuid, $2, $3::uuid)",
                    [(record.id, n, s) for n, s in record.secret_ids.items()],
                )
            except asyncpg.ForeignKeyViolationError:
                raise NotFound("A secret of the container no longer exists.") from None
            event = ev.SecretContainerCreated(
                container_id=record.id,
                project_id=record.project_id,
                name=record.name,
                type=record.type,
                secret_ids=record.secret_ids,
            )
            await self._events.append(StreamId.secret(record.id), 0, [event], meta, conn=conn)

    async def container(self, container_id: str) -> ContainerRecord | None:
        row = await self._pool.fetchrow(
            _CONTAINER_SQL + "WHERE c.id = $1::uuid GROUP BY c.id", container_id
        )
        return _container(row) if row else None

    async def list_containers(
        self, project_id: str, limit: int, offset: int, name: str | None = None
    ) -> tuple[list[ContainerRecord], int]:
        rows = await self._pool.fetch(
            _CONTAINER_SQL + "WHERE c.project_id = $1 AND ($2::text IS NULL OR c.name = $2) "
            "GROUP BY c.id ORDER BY c.created_at, c.id LIMIT $3 OFFSET $4",
            project_id,
            name,
            limit,
            offset,
        )
        total = await self._pool.fetchval(
            "SELECT count(*) FROM secret_containers WHERE project_id = $1 AND "
            "($2::text IS NULL OR name = $2)",
            project_id,
            name,
        )
        return [_container(r) for r in rows], int(total)

    async def delete_container(
        self, record: ContainerRecord, meta: Metadata, guard: DeleteGuard
    ) -> None:
        """Delete the container (its secrets stay); Conflict when ``guard`` names a user."""
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT 1 FROM secret_containers WHERE id = $1::uuid FOR UPDATE", record.id
            )
            if locked is None:
                raise NotFound(f"Container {record.id} not found.")
            reason = await guard(conn, [record.id])
            if reason is not None:
                raise Conflict(f"Container {record.id} is in use by {reason}.")
            await conn.execute("DELETE FROM secret_containers WHERE id = $1::uuid", record.id)
            event = ev.SecretContainerDeleted(container_id=record.id, project_id=record.project_id)
            await self._events.append(StreamId.secret(record.id), 1, [event], meta, conn=conn)

    # -- TLS material --------------------------------------------------------------------------

    async def _locate(
        self, ref: str, project_id: str | None, what: str
    ) -> tuple[ContainerRecord | None, SecretRecord | None]:
        """The container or secret ``ref`` names, if ``project_id`` (None: any) owns it."""
        parsed = parse_ref(ref)
        if parsed is None:
            raise UnusableReference(f"{what}: not a key manager reference.")
        if parsed.kind in (None, "containers"):
            container = await self.container(parsed.id)
            if container is not None:
                if project_id is not None and container.project_id != project_id:
                    raise UnusableReference(f"{what}: no such container in this project.")
                return container, None
            if parsed.kind == "containers":
                raise UnusableReference(f"{what}: no such container in this project.")
        record = await self.secret(parsed.id)
        if record is None or (project_id is not None and record.project_id != project_id):
            raise UnusableReference(f"{what}: no such secret in this project.")
        return None, record

    async def keypair(self, ref: str, project_id: str | None, what: str) -> KeyPair:
        """A certificate container (certificate, private_key, intermediates,
        private_key_passphrase) or a secret holding PKCS12 (or a PEM with certificate and
        key). Raises UnusableReference or TlsMaterialError with the reason."""
        container, secret = await self._locate(ref, project_id, what)
        if container is not None:
            parts = container.secret_ids
            if "certificate" not in parts:
                raise UnusableReference(f"{what}: the container has no certificate.")
            cert = await self.payload(parts["certificate"])
            key = await self.payload(parts["private_key"]) if "private_key" in parts else None
            chain = await self.payload(parts["intermediates"]) if "intermediates" in parts else None
            passphrase = (
                await self.payload(parts["private_key_passphrase"])
                if "private_key_passphrase" in parts
                else None
            )
            if key is None and looks_like_pkcs12(cert):
                return load_pkcs12(cert, passphrase=passphrase, what=what)
            return load_keypair(cert, key, intermediates=chain, passphrase=passphrase, what=what)
        assert secret is not None
        data = await self.payload(secret.id)
        if looks_like_pkcs12(data):
            return load_pkcs12(data, what=what)
        return load_keypair(data, None, what=what)

    async def _single_payload(self, ref: str, project_id: str | None, what: str) -> bytes:
        container, secret = await self._locate(ref, project_id, what)
        if container is not None:
            secret_id = container.secret_ids.get("certificate")
            if secret_id is None:
                raise UnusableReference(f"{what}: the container has no certificate.")
            return await self.payload(secret_id)
        assert secret is not None
        return await self.payload(secret.id)

    async def ca_bundle(self, ref: str, project_id: str | None, what: str) -> CaBundle:
        """A secret (or a container's certificate) holding PEM CA certificates."""
        return load_ca_bundle(await self._single_payload(ref, project_id, what), what=what)

    async def crl(self, ref: str, project_id: str | None, what: str) -> Revocations:
        """A secret (or a container's certificate) holding a CRL."""
        return load_crl(await self._single_payload(ref, project_id, what), what=what)


# Re-exported for the callers that catch both.
MaterialError = (UnusableReference, TlsMaterialError)
