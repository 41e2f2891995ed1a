"""``/lbaas/flavorprofiles``: the provider settings behind flavors (admin only)."""

from __future__ import annotations

from services.api.domain.catalog import FLAVOR_PROFILES
from services.api.domain.kinds import FLAVOR_PROFILE
from services.api.domain.policy import Action
from services.api.http.resources._catalog import register_section
from services.api.http.routing import ApiRouter
from services.api.http.schemas.flavor import FlavorProfileCreate, FlavorProfileUpdate


def register(api: ApiRouter) -> None:
    register_section(
        api,
        kind=FLAVOR_PROFILE,
        section=FLAVOR_PROFILES,
        path="/flavorprofiles",
        param="flavorprofile_id",
        create=FlavorProfileCreate,
        update=FlavorProfileUpdate,
        read=Action.ADMIN,
    )
