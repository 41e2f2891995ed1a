"""Flavor and flavor profile bodies (POST and PUT).

A PUT attribute that cannot be unset has a placeholder default (``unchanged_when_absent``): only
attributes the client sent are applied (``Input.given``); an explicit null is a wrong type.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints
from pydantic.config import JsonDict

from services.api.domain.providers import MAX_PROFILE_DATA
from services.api.http.schemas._base import Input, Name, Text255, Uuid

ProfileData = Annotated[str, StringConstraints(max_length=MAX_PROFILE_DATA)]


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


def unchanged_when_absent(placeholder: Any) -> Any:
    """A PUT attribute that is left as it is when absent (and cannot be null): the placeholder
    is never applied and is kept out of the published schema."""
    return Field(default=placeholder, json_schema_extra=_no_default)


class FlavorCreate(Input):
    name: Text255
    description: Name = None
    enabled: bool = True
    flavor_profile_id: Uuid


class FlavorUpdate(Input):
    name: Text255 = unchanged_when_absent("")
    description: Name = None
    enabled: bool = unchanged_when_absent(True)


class FlavorProfileCreate(Input):
    name: Text255
    provider_name: Text255
    flavor_data: ProfileData


class FlavorProfileUpdate(Input):
    name: Text255 = unchanged_when_absent("")
    provider_name: Text255 = unchanged_when_absent("")
    flavor_data: ProfileData = unchanged_when_absent("")
