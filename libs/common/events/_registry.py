"""Registry of event payload types: stable stored names, schema versions and upcasters.

Every payload class declares its stored name explicitly (``class X(Event, name="X")``); a
duplicate name fails at import. Upcasters turn an old stored ``data`` dict into the current
shape before validation, so stored events are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from libs.common.errors import FulcrumError

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventType(FulcrumError, LookupError):
    """No payload class is registered under a stored event_type."""


class UnsupportedSchemaVersion(FulcrumError, LookupError):
    """A stored event is newer than this code, or an upcaster is missing."""


class Event(BaseModel):
    """Base of every event payload: a frozen, tolerant pydantic model."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    category: ClassVar[str] = ""

    def __init_subclass__(cls, *, name: str | None = None, version: int = 1, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is None:
            return  # an abstract intermediate base
        cls.event_type = name
        cls.schema_version = version
        _REGISTRY.register(cls)


class EventRegistry:
    """Maps stored names to payload classes and runs upcasters on read."""

    def __init__(self) -> None:
        self._types: dict[str, type[Event]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[Event]) -> None:
        if cls.event_type in self._types:
            raise TypeError(f"event type {cls.event_type!r} is registered twice")
        self._types[cls.event_type] = cls

    def register_upcaster(self, event_type: str, from_version: int, fn: Upcaster) -> None:
        """Register ``fn`` that turns version ``from_version`` data into ``from_version + 1``."""
        self._upcasters[(event_type, from_version)] = fn

    def types(self) -> dict[str, type[Event]]:
        return dict(self._types)

    def decode(self, event_type: str, schema_version: int, data: dict[str, Any]) -> Event:
        """Build the payload; raises UnknownEventType or UnsupportedSchemaVersion."""
        cls = self._types.get(event_type)
        if cls is None:
            raise UnknownEventType(event_type)
        if schema_version > cls.schema_version:
            raise UnsupportedSchemaVersion(
                f"{event_type} v{schema_version} is newer than this code (v{cls.schema_version})"
            )
        version = schema_version
        while version < cls.schema_version:
            upcast = self._upcasters.get((event_type, version))
            if upcast is None:
                raise UnsupportedSchemaVersion(f"no upcaster for {event_type} v{version}")
            data = upcast(data)
            version += 1
        return cls.model_validate(data)


_REGISTRY = EventRegistry()


def registry() -> EventRegistry:
    """The process-wide registry that payload classes join at import."""
    return _REGISTRY
