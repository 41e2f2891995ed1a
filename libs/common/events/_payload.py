"""Bases of the types nested in event payloads: snapshots and typed changes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

__all__ = ["Changes", "Stored"]


class Stored(BaseModel):
    """Base of the types nested in payloads: frozen and tolerant, as payloads are."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Changes(Stored):
    """Base of update payloads: every field optional; only the fields set are stored and apply.

    ``given()`` is what was set (a field set to null included), by stored name.
    """

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}

    def given(self) -> dict[str, Any]:
        """The set fields, as plain Python values (nested types as dicts)."""
        return self.model_dump(exclude_unset=True)

    def __contains__(self, name: object) -> bool:
        """Whether the update set the field ``name`` (stored name)."""
        return name in self.model_fields_set
