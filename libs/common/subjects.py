"""Every NATS subject and the stream name: the only place they are spelled."""

from __future__ import annotations

from typing import Final

STREAM_NAME: Final = "FULCRUM_EVENTS"
PREFIX: Final = "fulcrum.events"
ALL_EVENTS: Final = f"{PREFIX}.>"


def event_subject(stream_id: str, event_type: str) -> str:
    """``fulcrum.events.<category>.<id>.<EventType>`` for an event of ``stream_id``."""
    category, aggregate_id = stream_id.split("-", 1)
    return f"{PREFIX}.{category}.{aggregate_id}.{event_type}"


def category_events(category: str) -> str:
    """Every event of one category (``loadbalancer``, ``amphora`` ...)."""
    return f"{PREFIX}.{category}.>"


def events_of_type(category: str, event_type: str) -> str:
    """One event type across every stream of a category."""
    return f"{PREFIX}.{category}.*.{event_type}"
