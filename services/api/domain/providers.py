"""The one provider, ``amphora`` (alias ``octavia``): its capabilities and how it reads flavor
and availability zone profiles.

Pure. Profile data is JSON text; Octavia answers undecodable text with 400 ("... is not a valid
option for flavor_data") and data the provider does not support with 501 (the provider refuses
an option), and so do we.
"""

from __future__ import annotations

import json
from typing import Any, Final

from libs.common.domain.model import Topology
from libs.common.errors import NotImplementedByProvider, ValidationFailed

AMPHORA: Final = "amphora"
PROVIDERS: Final[dict[str, str]] = {
    AMPHORA: "The Octavia Amphora driver.",
    "octavia": "Deprecated alias of the Octavia Amphora driver.",
}
MAX_PROFILE_DATA: Final = 4096

# name -> (JSON type, description); the types are those of Octavia's amphora schemas.
_FLAVOR_SCHEMA: Final[dict[str, tuple[type, str]]] = {
    "loadbalancer_topology": (
        str,
        "The load balancer topology. One of: SINGLE - One amphora per load balancer. "
        "ACTIVE_STANDBY - Two amphora per load balancer.",
    ),
    "compute_flavor": (str, "The compute driver flavor ID."),
    "amp_image_tag": (str, "The amphora image tag."),
    "sriov_vip": (bool, "When true, the VIP port will be created using an SR-IOV VF port."),
    "allow_member_sriov": (
        bool,
        "When true, users can request a member port be SR-IOV enabled at member creation time.",
    ),
}
_AVAILABILITY_ZONE_SCHEMA: Final[dict[str, tuple[type, str]]] = {
    "compute_zone": (str, "The compute availability zone."),
    "volume_zone": (str, "The volume availability zone."),
    "management_network": (str, "The management network ID for the amphora."),
    "valid_vip_networks": (
        list,
        "List of network IDs that are allowed for VIP use. This overrides/replaces the list "
        "of allowed networks configured in `octavia.conf`.",
    ),
}
FLAVOR_CAPABILITIES: Final = {name: doc for name, (_, doc) in _FLAVOR_SCHEMA.items()}
AVAILABILITY_ZONE_CAPABILITIES: Final = {
    name: doc for name, (_, doc) in _AVAILABILITY_ZONE_SCHEMA.items()
}
_JSON_TYPES: Final = {str: "string", bool: "boolean", list: "array"}


def require_enabled(provider: str) -> str:
    """``provider`` if it is enabled here; else ValidationFailed (Octavia's ProviderNotEnabled)."""
    if provider not in PROVIDERS:
        raise ValidationFailed(f"Provider '{provider}' is not enabled.")
    return provider


def _decoded(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ValidationFailed(f"{text} is not a valid option for {option}") from None


def _validated(provider: str, data: Any, schema: dict[str, tuple[type, str]]) -> dict[str, Any]:
    def refuse(reason: str) -> NotImplementedByProvider:
        return NotImplementedByProvider(
            f"Provider '{provider}' does not support a requested option: {reason}"
        )

    if not isinstance(data, dict):
        raise refuse(f"{json.dumps(data)} is not of type 'object'")
    unexpected = [k for k in data if k not in schema]
    if unexpected:
        names = ", ".join(repr(k) for k in unexpected)
        raise refuse(f"Additional properties are not allowed ({names} was unexpected)")
    for name, value in data.items():
        expected = schema[name][0]
        # bool is an int in Python, but JSON keeps them apart.
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise refuse(f"{name} {json.dumps(value)} is not of type '{_JSON_TYPES[expected]}'")
    topology = data.get("loadbalancer_topology")
    if topology is not None and topology not in {t.value for t in Topology}:
        allowed = [t.value for t in Topology]
        raise refuse(f"loadbalancer_topology {json.dumps(topology)} is not one of {allowed}")
    return data


def flavor_settings(provider: str, text: str) -> dict[str, Any]:
    """Validated ``flavor_data``: 400 when not JSON, 501 when the amphora cannot honour it."""
    return _validated(provider, _decoded(text, "flavor_data"), _FLAVOR_SCHEMA)


def availability_zone_settings(provider: str, text: str) -> dict[str, Any]:
    """Validated ``availability_zone_data`` (400 when not JSON, 501 when unsupported)."""
    return _validated(provider, _decoded(text, "availability_zone_data"), _AVAILABILITY_ZONE_SCHEMA)


def topology_of(flavor_data: str, default: Topology) -> Topology:
    """The topology a stored (already validated) flavor profile asks for, else ``default``."""
    value = json.loads(flavor_data).get("loadbalancer_topology")
    return Topology(value) if value else default


def valid_vip_networks(availability_zone_data: str) -> frozenset[str] | None:
    """The networks a stored zone profile allows VIPs on (None: no restriction)."""
    networks = json.loads(availability_zone_data).get("valid_vip_networks")
    return frozenset(str(n) for n in networks) if networks is not None else None
