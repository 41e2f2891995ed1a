"""Events of the ``availabilityzone-<name>`` and ``availabilityzoneprofile-<id>`` streams.

Availability zones are keyed by name (as in Octavia); their profile holds the provider's
settings (``availability_zone_data``, JSON text such as ``{"compute_zone": ...}``).
Creation carries every attribute; an update carries only the changed ones.
"""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._payload import Changes
from libs.common.events._registry import Event


class AvailabilityZoneChanges(Changes):
    """Some of description and enabled of an availability zone."""

    description: str | None = None
    enabled: bool | None = None


class AvailabilityZoneProfileChanges(Changes):
    """Some of name, provider_name and availability_zone_data of a zone profile."""

    name: str | None = None
    provider_name: str | None = None
    availability_zone_data: str | None = None


class AvailabilityZoneEvent(Event):
    category: ClassVar[str] = "availabilityzone"


class AvailabilityZoneCreated(AvailabilityZoneEvent, name="AvailabilityZoneCreated"):
    """An operator offered the zone ``name`` backed by ``availability_zone_profile_id``."""

    name: str
    description: str = ""
    enabled: bool = True
    availability_zone_profile_id: str


class AvailabilityZoneUpdated(AvailabilityZoneEvent, name="AvailabilityZoneUpdated"):
    """Some of description and enabled changed."""

    name: str
    changes: AvailabilityZoneChanges


class AvailabilityZoneDeleted(AvailabilityZoneEvent, name="AvailabilityZoneDeleted"):
    name: str


class AvailabilityZoneProfileEvent(Event):
    category: ClassVar[str] = "availabilityzoneprofile"


class AvailabilityZoneProfileCreated(
    AvailabilityZoneProfileEvent, name="AvailabilityZoneProfileCreated"
):
    """Provider settings that zones refer to; ``availability_zone_data`` is validated JSON."""

    id: str
    name: str
    provider_name: str
    availability_zone_data: str


class AvailabilityZoneProfileUpdated(
    AvailabilityZoneProfileEvent, name="AvailabilityZoneProfileUpdated"
):
    """Some of name, provider_name and availability_zone_data changed (the latter two only
    while no zone uses the profile)."""

    id: str
    changes: AvailabilityZoneProfileChanges


class AvailabilityZoneProfileDeleted(
    AvailabilityZoneProfileEvent, name="AvailabilityZoneProfileDeleted"
):
    id: str
