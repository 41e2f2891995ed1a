"""``/lbaas/flavors``: what users choose at load balancer create (admins write, readers read)."""

from __future__ import annotations

from services.api.domain.catalog import FLAVORS
from services.api.domain.kinds import FLAVOR
from services.api.domain.policy import Action
from services.api.http.resources._catalog import register_section
from services.api.http.routing import ApiRouter
from services.api.http.schemas.flavor import FlavorCreate, FlavorUpdate


def register(api: ApiRouter) -> None:
    register_section(
        api,
        kind=FLAVOR,
        section=FLAVORS,
        path="/flavors",
        param="flavor_id",
        create=FlavorCreate,
        update=FlavorUpdate,
        read=Action.READ,
    )
