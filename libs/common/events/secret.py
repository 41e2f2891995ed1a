"""Events of the key manager's ``secret-<uuid>`` streams: secrets and certificate containers.

They carry references and metadata only, never a payload: payloads live encrypted in the
``secrets`` table (libs/common/secretstore.py) and are deleted for real with the secret, which
an insert-only event log could not do. These events are the audit trail of who stored and
deleted what; no consumer needs them to act.
"""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._registry import Event


class SecretEvent(Event):
    category: ClassVar[str] = "secret"


class SecretStored(SecretEvent, name="SecretStored"):
    """A secret was stored; ``content_type`` is its payload's (text/plain or
    application/octet-stream); ``key_id`` names the encryption key, not the key."""

    secret_id: str
    project_id: str
    name: str | None = None
    secret_type: str
    content_type: str
    key_id: str


class SecretDeleted(SecretEvent, name="SecretDeleted"):
    """The secret and its encrypted payload were deleted."""

    secret_id: str
    project_id: str


class SecretContainerCreated(SecretEvent, name="SecretContainerCreated"):
    """A container grouping secrets by name (``certificate``, ``private_key``...)."""

    container_id: str
    project_id: str
    name: str | None = None
    type: str
    secret_ids: dict[str, str]


class SecretContainerDeleted(SecretEvent, name="SecretContainerDeleted"):
    container_id: str
    project_id: str
