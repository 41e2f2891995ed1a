"""Every NATS subject and the stream name: the only place they are spelled."""

from __future__ import annotations

import re
from typing import Final

from libs.common.streams import StreamId

STREAM_NAME: Final = "FULCRUM_EVENTS"
PREFIX: Final = "fulcrum.events"
ALL_EVENTS: Final = f"{PREFIX}.>"
_TOKEN_SAFE: Final = re.compile(r"[A-Za-z0-9_-]+")


def subject_token(value: str) -> str:
    """``value`` as one subject token: UUIDs and other ``[A-Za-z0-9_-]`` ids stay as they are;
    any other character (``.``, ``*``, ``>``, whitespace, ``%`` ...) becomes ``%XX`` of its
    UTF-8 bytes, so ids chosen by users (availability zone names) cannot split or wildcard a
    subject."""
    if _TOKEN_SAFE.fullmatch(value):
        return value
    return "".join(
        ch if _TOKEN_SAFE.fullmatch(ch) else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in value
    )


def event_subject(stream_id: str, event_type: str) -> str:
    """``fulcrum.events.<category>.<id>.<EventType>`` for an event of ``stream_id``."""
    stream = StreamId.parse(stream_id)
    return f"{PREFIX}.{stream.category}.{subject_token(stream.aggregate_id)}.{event_type}"


def category_events(category: str) -> str:
    """Every event of one category (``loadbalancer``, ``amphora`` ...)."""
    return f"{PREFIX}.{category}.>"


def events_of_type(category: str, event_type: str) -> str:
    """One event type across every stream of a category."""
    return f"{PREFIX}.{category}.*.{event_type}"
