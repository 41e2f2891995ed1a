"""``/lbaas/availabilityzoneprofiles``: the provider settings behind zones (admin only)."""

from __future__ import annotations

from services.api.domain.catalog import AVAILABILITY_ZONE_PROFILES
from services.api.domain.kinds import AVAILABILITY_ZONE_PROFILE
from services.api.domain.policy import Action
from services.api.http.resources._catalog import register_section
from services.api.http.routing import ApiRouter
from services.api.http.schemas.availability_zone import (
    AvailabilityZoneProfileCreate,
    AvailabilityZoneProfileUpdate,
)


def register(api: ApiRouter) -> None:
    register_section(
        api,
        kind=AVAILABILITY_ZONE_PROFILE,
        section=AVAILABILITY_ZONE_PROFILES,
        path="/availabilityzoneprofiles",
        param="availability_zone_profile_id",
        create=AvailabilityZoneProfileCreate,
        update=AvailabilityZoneProfileUpdate,
        read=Action.ADMIN,
    )
