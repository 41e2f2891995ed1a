"""A project's stored quota: the ``quota-<project_id>`` aggregate and Octavia's quota bodies.

Pure. A stored limit is an int (-1 unlimited ... 2 000 000 000) or None ("the configured
default"). A project has a quota record from its first PUT on; a reset sets every limit back
to None but keeps the record (Octavia lists it with nulls, and a reset of a project without a
record is a 404). Bodies carry ``project_id``, the canonical names, the deprecated
``load_balancer`` and ``health_monitor`` aliases and ``tenant_id``, as Octavia answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from libs.common.errors import NotFound
from libs.common.events import Event
from libs.common.events import quota as ev

# Octavia's canonical quota resource names, in its body order.
QUOTA_RESOURCES: Final = (
    "loadbalancer",
    "listener",
    "member",
    "pool",
    "healthmonitor",
    "l7policy",
    "l7rule",
)
# Deprecated spelling -> canonical name (Octavia still accepts and returns both).
DEPRECATED_ALIASES: Final = {"load_balancer": "loadbalancer", "health_monitor": "healthmonitor"}
_ALIAS_OF: Final = {name: alias for alias, name in DEPRECATED_ALIASES.items()}
MIN_QUOTA: Final = -1
MAX_QUOTA: Final = 2_000_000_000

Limits = Mapping[str, int | None]


class QuotaState(BaseModel):
    """Stored limits by canonical name (absent or None = default)."""

    model_config = ConfigDict(frozen=True)

    version: int = 0
    limits: dict[str, int | None] = Field(default_factory=dict)

    @property
    def exists(self) -> bool:
        """Whether the project has a quota record (set once, kept through resets)."""
        return self.version > 0

    @property
    def stored(self) -> bool:
        """Whether any limit differs from "the default"."""
        return any(v is not None for v in self.limits.values())


@dataclass(frozen=True)
class SetQuota:
    """Set the named limits (None: back to the default); names are canonical."""

    limits: dict[str, int | None]


@dataclass(frozen=True)
class ResetQuota:
    pass


QuotaCommand = SetQuota | ResetQuota


def decide(project_id: str, command: QuotaCommand, state: QuotaState) -> list[Event]:
    """Events for ``command``; a change to nothing appends nothing once the record exists.

    Raises NotFound for a reset of a project that has no quota record."""
    match command:
        case SetQuota():
            unknown = set(command.limits) - set(QUOTA_RESOURCES)
            if unknown:
                raise TypeError(f"unknown quota resources {sorted(unknown)}")
            changed = {k: v for k, v in command.limits.items() if state.limits.get(k) != v}
            if not changed and state.exists:
                return []
            return [ev.QuotaUpdated(project_id=project_id, limits=changed)]
        case ResetQuota():
            if not state.exists:
                raise NotFound(f"Quotas {project_id} not found.")
            return [ev.QuotaReset(project_id=project_id)] if state.stored else []
    raise TypeError(f"unknown command {command!r}")


def evolve(state: QuotaState, event: Event) -> QuotaState:
    """Pure fold step; never raises."""
    version = state.version + 1
    match event:
        case ev.QuotaUpdated():
            return QuotaState(version=version, limits={**state.limits, **event.limits.given()})
        case ev.QuotaReset():
            return QuotaState(version=version)
    return state.model_copy(update={"version": version})


def fold(events: list[Event]) -> QuotaState:
    state = QuotaState()
    for event in events:
        state = evolve(state, event)
    return state


def canonical(given: Mapping[str, int | None]) -> dict[str, int | None]:
    """A request's limits under canonical names; a canonical name wins over its alias."""
    out: dict[str, int | None] = {}
    for alias, name in DEPRECATED_ALIASES.items():
        if alias in given:
            out[name] = given[alias]
    out.update({k: v for k, v in given.items() if k in QUOTA_RESOURCES})
    return out


def stored_row(limits: Limits) -> dict[str, int | None]:
    """What ``quota_view.body`` holds: every canonical name, None for "the default"."""
    return {name: limits.get(name) for name in QUOTA_RESOURCES}


def quota_body(
    project_id: str, limits: Limits, defaults: Mapping[str, int] | None = None
) -> dict[str, str | int | None]:
    """Octavia's quota body of ``project_id``; with ``defaults``, None values become the
    effective default."""
    values = {
        name: (
            value if (value := limits.get(name)) is not None or defaults is None else defaults[name]
        )
        for name in QUOTA_RESOURCES
    }
    body: dict[str, str | int | None] = {"project_id": project_id}
    for name in QUOTA_RESOURCES:
        body[name] = values[name]
        alias = _ALIAS_OF.get(name)
        if alias is not None:
            body[alias] = values[name]
    body["tenant_id"] = project_id
    return body
