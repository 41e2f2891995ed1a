"""Events of the ``flavor-<id>`` and ``flavorprofile-<id>`` streams.

A flavor is what users pick at load balancer create (``flavor_id``); its profile holds the
provider's settings (``flavor_data``, a JSON text such as ``{"loadbalancer_topology": ...}``).
Creation carries every attribute; an update carries only the changed ones.
"""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._payload import Changes
from libs.common.events._registry import Event


class FlavorChanges(Changes):
    """Some of name, description and enabled of a flavor."""

    name: str | None = None
    description: str | None = None
    enabled: bool | None = None


class FlavorProfileChanges(Changes):
    """Some of name, provider_name and flavor_data of a flavor profile."""

    name: str | None = None
    provider_name: str | None = None
    flavor_data: str | None = None


class FlavorEvent(Event):
    category: ClassVar[str] = "flavor"


class FlavorCreated(FlavorEvent, name="FlavorCreated"):
    """An operator offered a flavor backed by ``flavor_profile_id``."""

    id: str
    name: str
    description: str = ""
    enabled: bool = True
    flavor_profile_id: str


class FlavorUpdated(FlavorEvent, name="FlavorUpdated"):
    """Some of name, description and enabled changed."""

    id: str
    changes: FlavorChanges


class FlavorDeleted(FlavorEvent, name="FlavorDeleted"):
    id: str


class FlavorProfileEvent(Event):
    category: ClassVar[str] = "flavorprofile"


class FlavorProfileCreated(FlavorProfileEvent, name="FlavorProfileCreated"):
    """Provider settings that flavors refer to; ``flavor_data`` is validated JSON text."""

    id: str
    name: str
    provider_name: str
    flavor_data: str


class FlavorProfileUpdated(FlavorProfileEvent, name="FlavorProfileUpdated"):
    """Some of name, provider_name and flavor_data changed (the latter two only while no
    flavor uses the profile)."""

    id: str
    changes: FlavorProfileChanges


class FlavorProfileDeleted(FlavorProfileEvent, name="FlavorProfileDeleted"):
    id: str
