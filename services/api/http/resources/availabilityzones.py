"""``/lbaas/availabilityzones``: zones users may place load balancers in, keyed by name
(admins write, readers read)."""

from __future__ import annotations

from services.api.domain.catalog import AVAILABILITY_ZONES
from services.api.domain.kinds import AVAILABILITY_ZONE
from services.api.domain.policy import Action
from services.api.http.resources._catalog import register_section
from services.api.http.routing import ApiRouter
from services.api.http.schemas.availability_zone import (
    AvailabilityZoneCreate,
    AvailabilityZoneUpdate,
)


def register(api: ApiRouter) -> None:
    register_section(
        api,
        kind=AVAILABILITY_ZONE,
        section=AVAILABILITY_ZONES,
        path="/availabilityzones",
        param="availability_zone_name",
        create=AvailabilityZoneCreate,
        update=AvailabilityZoneUpdate,
        read=Action.READ,
    )
