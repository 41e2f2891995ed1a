"""Events of the ``flavor-<id>`` and ``flavorprofile-<id>`` streams.

A flavor is what users pick at load balancer create (``flavor_id``); its profile holds the
provider's settings (``flavor_data``, a JSON text such as ``{"loadbalancer_topology": ...}``).
Creation carries every attribute; an update carries only the changed ones.
"""

from __future__ import annotations

from typing import Any, ClassVar

from libs.common.events._registry import Event


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
    changes: dict[str, Any]


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
    changes: dict[str, Any]


class FlavorProfileDeleted(FlavorProfileEvent, name="FlavorProfileDeleted"):
    id: str
