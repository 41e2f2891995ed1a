"""The envelope: metadata kept apart from the payload, as stored and as sent on the bus."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from libs.common.events._registry import Event, registry
from libs.common.streams import StreamId

_METADATA_KEYS = ("correlation_id", "causation_id", "actor", "project_id", "traceparent")


@dataclass(frozen=True, slots=True)
class Metadata:
    """Who caused an append and in which trace: copied into every envelope of one append."""

    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    project_id: str | None = None
    traceparent: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in _METADATA_KEYS if getattr(self, k) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metadata:
        return cls(**{k: data.get(k) for k in _METADATA_KEYS})

    def owned_by(self, project_id: str | None) -> Metadata:
        """This metadata with ``project_id`` set to the project that owns the stream's
        resource (kept as is when that is unknown): the project whose live event feed
        shows the events."""
        if project_id is None or project_id == self.project_id:
            return self
        return replace(self, project_id=project_id)

    def caused_by(self, envelope: Envelope) -> Metadata:
        """Metadata for events caused by ``envelope``: same correlation, causation = its id."""
        return Metadata(
            correlation_id=envelope.metadata.correlation_id or str(envelope.event_id),
            causation_id=str(envelope.event_id),
            actor=self.actor,
            project_id=envelope.metadata.project_id,
            traceparent=self.traceparent or envelope.metadata.traceparent,
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A stored event. ``global_position`` is known only once read back from the store."""

    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    payload: Event
    occurred_at: datetime
    metadata: Metadata = field(default_factory=Metadata)
    global_position: int | None = None

    @property
    def event_type(self) -> str:
        return self.payload.event_type

    @property
    def schema_version(self) -> int:
        return self.payload.schema_version

    @property
    def category(self) -> str:
        return StreamId.parse(self.stream_id).category

    @property
    def aggregate_id(self) -> str:
        return StreamId.parse(self.stream_id).aggregate_id

    def to_wire(self) -> dict[str, Any]:
        """The JSON body sent on the bus (and shown by ``fulcrum events tail``)."""
        return {
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "schema_version": self.schema_version,
            "stream_id": self.stream_id,
            "stream_version": self.stream_version,
            "occurred_at": self.occurred_at.isoformat(),
            "metadata": self.metadata.as_dict(),
            "global_position": self.global_position,
            "data": self.payload.model_dump(mode="json"),
        }

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Envelope:
        """Decode a bus message; raises the registry's lookup errors for unknown types."""
        payload = registry().decode(body["event_type"], body["schema_version"], body["data"])
        return cls(
            event_id=uuid.UUID(body["event_id"]),
            stream_id=body["stream_id"],
            stream_version=body["stream_version"],
            payload=payload,
            occurred_at=datetime.fromisoformat(body["occurred_at"]),
            metadata=Metadata.from_dict(body.get("metadata") or {}),
            global_position=body.get("global_position"),
        )


def new_envelope(
    stream_id: str, stream_version: int, payload: Event, metadata: Metadata
) -> Envelope:
    """An envelope for a payload about to be appended."""
    return Envelope(
        event_id=uuid.uuid4(),
        stream_id=stream_id,
        stream_version=stream_version,
        payload=payload,
        occurred_at=datetime.now(UTC),
        metadata=metadata,
    )
