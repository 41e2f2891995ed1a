"""What operators offer: flavors, availability zones and their profiles, as one small aggregate.

Each entry lives in its own stream (``flavor-<id>``, ``flavorprofile-<id>``,
``availabilityzone-<name>``, ``availabilityzoneprofile-<id>``). Its state is the entry's API
body; ``decide`` and ``evolve`` are pure and shared by the four sections, which differ only in
their events, labels and the attributes a PUT may change. Rules spanning entries (a profile in
use, a flavor in use by a load balancer, unique flavor names) are checked by the adapter inside
the append transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from libs.common.errors import Conflict, NotFound
from libs.common.events import Event
from libs.common.events import availability_zone as az_ev
from libs.common.events import flavor as flavor_ev
from libs.common.streams import StreamId


@dataclass(frozen=True)
class Section:
    """One kind of catalog entry: its stream category, events and naming."""

    category: str
    label: str
    # The body attribute that names the entry (and its stream): "id", or "name" for zones.
    key: str
    created: type[Event]
    updated: type[Event]
    deleted: type[Event]
    # Attributes a PUT may change.
    mutable: frozenset[str]
    # The attribute naming the profile an entry uses, for entries that have one.
    profile_attr: str | None = None
    # The load balancer attribute that refers to the entry (it cannot go while referred to).
    lb_attr: str | None = None
    # How a GET or PUT of a missing entry names it, where Octavia spells it differently.
    lookup_label: str = ""

    @property
    def missing_label(self) -> str:
        return self.lookup_label or self.label

    def stream(self, key: str) -> StreamId:
        return StreamId(self.category, key)


FLAVORS: Final = Section(
    category="flavor",
    label="Flavor",
    key="id",
    created=flavor_ev.FlavorCreated,
    updated=flavor_ev.FlavorUpdated,
    deleted=flavor_ev.FlavorDeleted,
    mutable=frozenset({"name", "description", "enabled"}),
    profile_attr="flavor_profile_id",
    lb_attr="flavor_id",
)
FLAVOR_PROFILES: Final = Section(
    category="flavorprofile",
    label="Flavor profile",
    lookup_label="Flavor Profile",
    key="id",
    created=flavor_ev.FlavorProfileCreated,
    updated=flavor_ev.FlavorProfileUpdated,
    deleted=flavor_ev.FlavorProfileDeleted,
    mutable=frozenset({"name", "provider_name", "flavor_data"}),
)
AVAILABILITY_ZONES: Final = Section(
    category="availabilityzone",
    label="Availability Zone",
    key="name",
    created=az_ev.AvailabilityZoneCreated,
    updated=az_ev.AvailabilityZoneUpdated,
    deleted=az_ev.AvailabilityZoneDeleted,
    mutable=frozenset({"description", "enabled"}),
    profile_attr="availability_zone_profile_id",
    lb_attr="availability_zone",
)
AVAILABILITY_ZONE_PROFILES: Final = Section(
    category="availabilityzoneprofile",
    label="Availability Zone Profile",
    key="id",
    created=az_ev.AvailabilityZoneProfileCreated,
    updated=az_ev.AvailabilityZoneProfileUpdated,
    deleted=az_ev.AvailabilityZoneProfileDeleted,
    mutable=frozenset({"name", "provider_name", "availability_zone_data"}),
)
SECTIONS: Final = (FLAVORS, FLAVOR_PROFILES, AVAILABILITY_ZONES, AVAILABILITY_ZONE_PROFILES)
# Entry section -> the section of the profiles it uses.
PROFILE_OF: Final = {
    FLAVORS.category: FLAVOR_PROFILES,
    AVAILABILITY_ZONES.category: AVAILABILITY_ZONE_PROFILES,
}
# Profile section -> the section of the entries that use such profiles.
USERS_OF: Final = {
    FLAVOR_PROFILES.category: FLAVORS,
    AVAILABILITY_ZONE_PROFILES.category: AVAILABILITY_ZONES,
}
# Profile attributes that may change only while no entry uses the profile (Octavia's rule).
GUARDED_PROFILE_ATTRS: Final = frozenset({"provider_name", "flavor_data", "availability_zone_data"})


class Entry(BaseModel):
    """One entry's state: its API body, or None before creation and after deletion."""

    model_config = ConfigDict(frozen=True)

    version: int = 0
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class CreateEntry:
    """``body`` is the complete API body, key attribute included."""

    body: dict[str, Any]


@dataclass(frozen=True)
class UpdateEntry:
    changes: dict[str, Any]


@dataclass(frozen=True)
class DeleteEntry:
    pass


EntryCommand = CreateEntry | UpdateEntry | DeleteEntry


def decide(section: Section, key: str, command: EntryCommand, state: Entry) -> list[Event]:
    """The events of ``command``; raises Conflict (exists) or NotFound (absent).

    An update that changes nothing appends nothing.
    """
    match command:
        case CreateEntry():
            if state.body is not None:
                raise Conflict(f"A {section.label.lower()} of {key} already exists.")
            return [section.created.model_validate(command.body)]
        case UpdateEntry():
            if state.body is None:
                raise NotFound.resource(section.missing_label, key)
            unknown = set(command.changes) - section.mutable
            if unknown:
                raise TypeError(f"{section.label} attributes {sorted(unknown)} are immutable")
            changes = {k: v for k, v in command.changes.items() if state.body.get(k) != v}
            if not changes:
                return []
            return [section.updated.model_validate({section.key: key, "changes": changes})]
        case DeleteEntry():
            if state.body is None:
                raise NotFound.resource(section.label, key)
            return [section.deleted.model_validate({section.key: key})]
    raise TypeError(f"unknown command {command!r}")


def evolve(section: Section, state: Entry, event: Event) -> Entry:
    """Pure fold step; events of other sections only bump the version."""
    version = state.version + 1
    if isinstance(event, section.created):
        return Entry(version=version, body=event.model_dump(mode="json"))
    if isinstance(event, section.updated) and state.body is not None:
        changes: dict[str, Any] = event.model_dump(mode="json")["changes"]
        return Entry(version=version, body={**state.body, **changes})
    if isinstance(event, section.deleted):
        return Entry(version=version, body=None)
    return state.model_copy(update={"version": version})


def fold(section: Section, events: list[Event]) -> Entry:
    state = Entry()
    for event in events:
        state = evolve(section, state, event)
    return state
