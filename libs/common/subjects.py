"""Every NATS subject and the stream name: the only place they are spelled."""

from __future__ import annotations

import re
from typing import Final

from libs.common.streams import StreamId

STREAM_NAME: Final = "FULCRUM_EVENTS"
PREFIX: Final = "fulcrum.events"
ALL_EVENTS: Final = f"{PREFIX}.>"
_TOKEN_SAFE: Final = re.compile(r"[A-Za-z0-9_-]+")
# Categories whose events outside subscribers may read (docs/security.md): the resources a
# tenant sees through the API. amphora, housekeeping, securitygroup, secret, quota and the
# operators' flavor and availability zone profiles stay internal.
PUBLIC_CATEGORIES: Final = ("loadbalancer", "lbstatus", "flavor", "availabilityzone")
# Replies to requests (JetStream API answers, PubAcks) arrive on inboxes.
INBOXES: Final = "_INBOX.>"
JS_API: Final = "$JS.API"


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


def event_type_of(subject: str) -> str:
    """The event type an ``event_subject`` names (its last token)."""
    return subject.rsplit(".", 1)[-1]


def category_events(category: str) -> str:
    """Every event of one category (``loadbalancer``, ``amphora`` ...)."""
    return f"{PREFIX}.{category}.>"


def events_of_type(category: str, event_type: str) -> str:
    """One event type across every stream of a category."""
    return f"{PREFIX}.{category}.*.{event_type}"


def public_events() -> list[str]:
    """The subjects outside subscribers may read: every event of ``PUBLIC_CATEGORIES``."""
    return [category_events(category) for category in PUBLIC_CATEGORIES]


def jetstream_api(*tokens: str) -> str:
    """A JetStream API subject: ``$JS.API.<tokens...>`` (``STREAM.INFO.<stream>`` ...)."""
    return ".".join((JS_API, *tokens))


def jetstream_acks(stream: str) -> str:
    """Every ack reply subject of the consumers of ``stream`` (ack, nak, in progress, term)."""
    return f"$JS.ACK.{stream}.>"


def jetstream_flow_control(stream: str) -> str:
    """The flow-control replies of push consumers of ``stream`` (ordered consumers)."""
    return f"$JS.FC.{stream}.>"
