"""The one provider, ``amphora`` (alias ``octavia``): its capabilities, what the deployment's
amphora driver can honour, and how it reads flavor and availability zone profiles.

Pure. Profile data is JSON text; Octavia answers undecodable text with 400 ("... is not a valid
option for flavor_data") and data the provider does not support with 501 (the provider refuses
an option), and so do we. Only settings that change behaviour are capabilities: a flavor's
``loadbalancer_topology`` (with ``amphora_min``/``amphora_max`` for ACTIVE_ACTIVE: integers,
1 <= min <= max <= the deployment's ceiling, and ``autoscale``, the autoscaler's settings;
400 otherwise) and a zone's
``valid_vip_networks``. Octavia's others (compute flavor,
image tag, SR-IOV, compute and volume zones, management network) mean nothing here, so they
are refused like any unknown key rather than accepted and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from libs.common.domain.model import AUTOSCALE_OVERRIDES, AmphoraBounds, Topology
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
        "ACTIVE_STANDBY - Two amphora per load balancer. ACTIVE_ACTIVE - Several amphorae "
        "behind one VIP, between amphora_min and amphora_max.",
    ),
    "amphora_min": (
        int,
        "ACTIVE_ACTIVE only: the number of amphorae a load balancer is built with and never "
        "goes below (an integer, at least 1; default 1).",
    ),
    "amphora_max": (
        int,
        "ACTIVE_ACTIVE only: the number of amphorae a load balancer never goes above (an "
        "integer from amphora_min to the deployment's ceiling; default the ceiling).",
    ),
    "autoscale": (
        dict,
        "ACTIVE_ACTIVE only: the autoscaler's settings for these load balancers instead of "
        "the deployment's, an object of numbers >= 0 (per amphora: connection_rate_out/_in "
        "new connections per second, active_connections_out/_in, cpu_out/_in cores; "
        "sustain and cooldown seconds), each _in below its _out.",
    ),
}
_ACTIVE_ACTIVE_ONLY: Final = ("amphora_min", "amphora_max", "autoscale")
_AVAILABILITY_ZONE_SCHEMA: Final[dict[str, tuple[type, str]]] = {
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
_JSON_TYPES: Final = {
    str: "string",
    bool: "boolean",
    list: "array",
    int: "integer",
    dict: "object",
}
DEFAULT_AMPHORA_CEILING: Final = 8


@dataclass(frozen=True)
class DriverAbilities:
    """What the deployment's amphora driver can honour (the API refuses the rest before
    anything is written). ``driver`` names it in refusals; "" is a driver the API was not told
    about: everything is accepted (the provisioner still refuses what it cannot do)."""

    driver: str = ""
    topologies: frozenset[Topology] = frozenset(Topology)
    vip_security_groups: bool = True
    udp: bool = False
    ipv6_vips: bool = True
    # The most amphorae an ACTIVE_ACTIVE load balancer may have (amphora_max's ceiling).
    amphora_ceiling: int = DEFAULT_AMPHORA_CEILING

    @classmethod
    def of(
        cls,
        driver: str,
        amphora_ceiling: int = DEFAULT_AMPHORA_CEILING,
        distributor: bool | None = None,
    ) -> DriverAbilities:
        """The abilities of a provisioner driver by name (``process``, ``netns``, ``docker``):
        the process driver's amphorae share the host's network namespace (loopback VIPs), so
        they can neither move a VIP between two amphorae nor filter it nor serve UDP; netns and
        docker amphorae serve UDP with nftables in their own namespace. A driver the API was
        not told about serves UDP only when ``udp_dataplane`` says so. Process amphorae hold
        loopback VIPs, which are IPv4 (IPv6 has one loopback address). ACTIVE_ACTIVE needs a
        distributor (one namespace owning the VIP): the netns and docker drivers have one, but
        ``distributor`` (when set) says whether this deployment's does (a docker provisioner
        that is not root has none)."""
        if driver == "process":
            return cls(
                driver,
                frozenset({Topology.SINGLE}),
                vip_security_groups=False,
                ipv6_vips=False,
                amphora_ceiling=amphora_ceiling,
            )
        topologies = frozenset(Topology)
        if distributor is False:
            topologies -= {Topology.ACTIVE_ACTIVE}
        return cls(
            driver,
            topologies,
            udp=driver in ("netns", "docker"),
            amphora_ceiling=amphora_ceiling,
        )

    def refuse_topology(self, topology: Topology) -> str | None:
        """Why ``topology`` cannot be honoured, or None when it can."""
        if topology in self.topologies:
            return None
        named = f"{self.driver} " if self.driver else ""
        return (
            f"The {named}amphora driver of this deployment does not support the "
            f"{topology.value} topology."
        )


ALL_ABILITIES: Final = DriverAbilities()


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


def flavor_settings(
    provider: str, text: str, abilities: DriverAbilities = ALL_ABILITIES
) -> dict[str, Any]:
    """Validated ``flavor_data``: 400 when not JSON or when its amphora bounds are bad, then
    501 when the amphora (or the deployment's driver: a topology it cannot run) cannot honour
    it."""
    decoded = _decoded(text, "flavor_data")
    if isinstance(decoded, dict):
        _check_bounds(decoded, abilities.amphora_ceiling)
    data = _validated(provider, decoded, _FLAVOR_SCHEMA)
    topology = data.get("loadbalancer_topology")
    refusal = abilities.refuse_topology(Topology(topology)) if topology else None
    if refusal is not None:
        raise NotImplementedByProvider(
            f"Provider '{provider}' does not support a requested option: {refusal}"
        )
    return data


def _check_bounds(data: dict[str, Any], ceiling: int) -> None:
    """400 unless ``amphora_min``/``amphora_max`` are absent, or integers with
    1 <= min <= max <= ``ceiling`` on an ACTIVE_ACTIVE flavor; likewise ``autoscale``
    (``_check_autoscale``)."""
    given = {name: data[name] for name in _ACTIVE_ACTIVE_ONLY if name in data}
    if not given:
        return
    if data.get("loadbalancer_topology") != Topology.ACTIVE_ACTIVE.value:
        names = " and ".join(given)
        raise ValidationFailed(
            f"Validation failure: {names} only apply to the ACTIVE_ACTIVE loadbalancer_topology."
        )
    if "autoscale" in given:
        _check_autoscale(given.pop("autoscale"))
    for name, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= ceiling:
            raise ValidationFailed(
                f"Validation failure: {name} {json.dumps(value)} is not an integer from 1 to "
                f"{ceiling}."
            )
    bounds = _bounds(data, ceiling)
    if bounds.amphora_min > bounds.amphora_max:
        raise ValidationFailed(
            f"Validation failure: amphora_min {bounds.amphora_min} is greater than amphora_max "
            f"{bounds.amphora_max}."
        )


def _check_autoscale(value: Any) -> None:
    """400 unless ``value`` is an object of known autoscaler settings, numbers >= 0, each
    ``*_in`` below its ``*_out`` when both are given."""
    if not isinstance(value, dict):
        raise ValidationFailed(
            f"Validation failure: autoscale {json.dumps(value)} is not an object."
        )
    unknown = sorted(set(value) - AUTOSCALE_OVERRIDES)
    if unknown:
        raise ValidationFailed(
            f"Validation failure: autoscale has no setting {', '.join(unknown)} (known: "
            f"{', '.join(sorted(AUTOSCALE_OVERRIDES))})."
        )
    for name, number in value.items():
        if not isinstance(number, int | float) or isinstance(number, bool) or number < 0:
            raise ValidationFailed(
                f"Validation failure: autoscale {name} {json.dumps(number)} is not a number >= 0."
            )
    for name in sorted(value):
        if name.endswith("_in") and f"{name[:-3]}_out" in value:
            low, high = value[name], value[f"{name[:-3]}_out"]
            if high and low >= high:
                raise ValidationFailed(
                    f"Validation failure: autoscale {name} {low} is not below "
                    f"{name[:-3]}_out {high}."
                )


def autoscale_overrides(flavor_data: str | None, topology: Topology) -> dict[str, float]:
    """The autoscaler settings a stored (validated) ACTIVE_ACTIVE flavor sets; {} otherwise."""
    if topology != Topology.ACTIVE_ACTIVE or flavor_data is None:
        return {}
    given = json.loads(flavor_data).get("autoscale") or {}
    return {str(name): float(number) for name, number in given.items()}


def _bounds(data: dict[str, Any], ceiling: int) -> AmphoraBounds:
    minimum = int(data.get("amphora_min", 1))
    return AmphoraBounds(amphora_min=minimum, amphora_max=int(data.get("amphora_max", ceiling)))


def amphora_bounds(
    flavor_data: str | None, topology: Topology, ceiling: int
) -> AmphoraBounds | None:
    """The amphora bounds of an ACTIVE_ACTIVE load balancer (from its stored, validated
    flavor profile, else the defaults: 1 to ``ceiling``); None for the other topologies."""
    if topology != Topology.ACTIVE_ACTIVE:
        return None
    data = json.loads(flavor_data) if flavor_data is not None else {}
    return _bounds(data, ceiling)


def availability_zone_settings(
    provider: str, text: str, abilities: DriverAbilities = ALL_ABILITIES
) -> dict[str, Any]:
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
