"""Operator use cases on the catalog: create, update and delete flavors, availability zones
and their profiles (all admin-only), validating profile data against the amphora provider.

Each write is one command on the entry's stream through ``CatalogRepository.execute``; the
answer is the entry's body as the command left it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol

from libs.common.events import Metadata
from services.api.domain import providers
from services.api.domain.catalog import (
    AVAILABILITY_ZONE_PROFILES,
    AVAILABILITY_ZONES,
    FLAVOR_PROFILES,
    FLAVORS,
    CreateEntry,
    DeleteEntry,
    Entry,
    EntryCommand,
    Section,
    UpdateEntry,
)
from services.api.domain.policy import Action, RequestContext, enforce

# Profile section -> (its data attribute, the provider's validation of that data).
_PROFILE_DATA: Final[
    dict[str, tuple[str, Callable[[str, str, providers.DriverAbilities], dict[str, Any]]]]
] = {
    FLAVOR_PROFILES.category: ("flavor_data", providers.flavor_settings),
    AVAILABILITY_ZONE_PROFILES.category: (
        "availability_zone_data",
        providers.availability_zone_settings,
    ),
}


class CatalogRepository(Protocol):
    async def load(self, section: Section, key: str) -> Entry: ...

    async def execute(
        self, section: Section, key: str, command: EntryCommand, metadata: Metadata
    ) -> Entry: ...


class CatalogAdministration:
    """Every state-changing catalog operation; each requires the admin role."""

    def __init__(
        self,
        repo: CatalogRepository,
        abilities: providers.DriverAbilities = providers.ALL_ABILITIES,
    ) -> None:
        self._repo = repo
        self._abilities = abilities

    async def create(
        self, ctx: RequestContext, section: Section, fields: dict[str, Any], meta: Metadata
    ) -> dict[str, Any]:
        """``fields`` are a validated POST body (JSON values, unset ones absent)."""
        enforce(ctx, Action.ADMIN, ctx.project_id)
        body = _new_body(section, fields, self._abilities)
        entry = await self._repo.execute(section, body[section.key], CreateEntry(body), meta)
        assert entry.body is not None
        return entry.body

    async def update(
        self,
        ctx: RequestContext,
        section: Section,
        key: str,
        given: dict[str, Any],
        meta: Metadata,
    ) -> dict[str, Any]:
        """Apply the attributes a PUT sent; NotFound, or 409 for a profile in use."""
        enforce(ctx, Action.ADMIN, ctx.project_id)
        changes = {k: ("" if k == "description" and v is None else v) for k, v in given.items()}
        data = _PROFILE_DATA.get(section.category)
        if data is not None:
            attr, validate = data
            if "provider_name" in changes:
                providers.require_enabled(changes["provider_name"])
            if attr in changes:
                provider = changes.get("provider_name")
                if provider is None:
                    current = await self._repo.load(section, key)
                    provider = (current.body or {}).get("provider_name", providers.AMPHORA)
                validate(provider, changes[attr], self._abilities)
        entry = await self._repo.execute(section, key, UpdateEntry(changes), meta)
        assert entry.body is not None
        return entry.body

    async def delete(self, ctx: RequestContext, section: Section, key: str, meta: Metadata) -> None:
        """NotFound, or 409 while in use (a profile by entries, an entry by load balancers)."""
        enforce(ctx, Action.ADMIN, ctx.project_id)
        await self._repo.execute(section, key, DeleteEntry(), meta)


def _new_body(
    section: Section, fields: dict[str, Any], abilities: providers.DriverAbilities
) -> dict[str, Any]:
    """The API body of a new entry, Octavia's defaults filled in."""
    if section is FLAVORS:
        return {
            "id": str(uuid.uuid4()),
            "name": fields["name"],
            "description": fields.get("description") or "",
            "enabled": fields.get("enabled", True),
            "flavor_profile_id": fields["flavor_profile_id"],
        }
    if section is AVAILABILITY_ZONES:
        return {
            "name": fields["name"],
            "description": fields.get("description") or "",
            "enabled": fields.get("enabled", True),
            "availability_zone_profile_id": fields["availability_zone_profile_id"],
        }
    attr, validate = _PROFILE_DATA[section.category]
    provider = providers.require_enabled(fields["provider_name"])
    validate(provider, fields[attr], abilities)
    return {
        "id": str(uuid.uuid4()),
        "name": fields["name"],
        "provider_name": provider,
        attr: fields[attr],
    }
