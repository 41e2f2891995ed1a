"""Availability zone and availability zone profile bodies (POST and PUT).

Zones are addressed by name in URLs, so a name is 1-255 characters without ``/`` or control
characters. PUT placeholders work as in flavor.py.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from services.api.http.schemas._base import Input, Name, Text255, Uuid
from services.api.http.schemas.flavor import ProfileData, unchanged_when_absent

ZoneName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^/\x00-\x1f\x7f]+$")
]


class AvailabilityZoneCreate(Input):
    name: ZoneName
    description: Name = None
    enabled: bool = True
    availability_zone_profile_id: Uuid


class AvailabilityZoneUpdate(Input):
    description: Name = None
    enabled: bool = unchanged_when_absent(True)


class AvailabilityZoneProfileCreate(Input):
    name: Text255
    provider_name: Text255
    availability_zone_data: ProfileData


class AvailabilityZoneProfileUpdate(Input):
    name: Text255 = unchanged_when_absent("")
    provider_name: Text255 = unchanged_when_absent("")
    availability_zone_data: ProfileData = unchanged_when_absent("")
