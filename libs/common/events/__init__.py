"""Event contracts: the envelope, the registry, and every payload type.

Importing this package registers every payload, so decoding works in any process.
"""

from __future__ import annotations

from libs.common.events import (
    amphora,
    availability_zone,
    flavor,
    housekeeping,
    loadbalancer,
    loadbalancer_status,
    quota,
    secret,
    security_group,
)
from libs.common.events._envelope import Envelope, Metadata, new_envelope
from libs.common.events._payload import Changes, Stored
from libs.common.events._registry import (
    Event,
    EventRegistry,
    UnknownEventType,
    UnsupportedSchemaVersion,
    registry,
)

__all__ = [
    "Changes",
    "Envelope",
    "Event",
    "EventRegistry",
    "Metadata",
    "UnknownEventType",
    "UnsupportedSchemaVersion",
    "amphora",
    "availability_zone",
    "flavor",
    "housekeeping",
    "loadbalancer",
    "loadbalancer_status",
    "new_envelope",
    "quota",
    "registry",
    "secret",
    "security_group",
    "Stored",
]
