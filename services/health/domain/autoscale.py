"""The autoscaler's decision for one ACTIVE_ACTIVE load balancer: pure, from the load its
amphorae reported.

Every measurement is the mean per amphora over the LB's serving amphorae: new connections
per second (``connection_rate``), open connections (``active_connections``) and the CPU its
HAProxy used, in cores (``cpu``; only when every amphora reports it). Rules:

- **Out**: a measurement above its ``*_out`` threshold for ``sustain`` seconds in a row asks
  for as many amphorae as bring the worst one back to its threshold (at least one more):
  ``ceil(current * value / threshold)``, capped by ``amphora_max`` and the room the quota
  leaves.
- **In**: every measurement below its ``*_in`` threshold, and still below its ``*_out``
  threshold when the load of one amphora fewer is spread over the rest (hysteresis: no
  scale-in that the next round would undo), for ``sustain`` seconds: one amphora fewer,
  never below ``amphora_min``.
- **Cool-down**: no decision within ``cooldown`` seconds of the previous one.

A flavor may set its own thresholds and times (``policy_with``; ``LoadBalancer.autoscale``).

``Tracking`` is what the caller keeps per LB between rounds (since when a rule holds, when
the last decision was made); ``decide`` returns the new one with its decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, Field, ValidationError, model_validator

from libs.common.domain.model import AUTOSCALE_OVERRIDES, AmphoraBounds
from libs.common.settings import DOCUMENTED

__all__ = [
    "AmphoraLoad",
    "Decision",
    "ScalingPolicy",
    "Tracking",
    "decide",
    "measure",
    "policy_with",
]

MEASUREMENTS: Final = ("connection_rate", "active_connections", "cpu")


class ScalingPolicy(BaseModel):
    """When ACTIVE_ACTIVE load balancers scale (per amphora; see services/health/domain/
    autoscale.py). A threshold of 0 turns its rule off."""

    model_config = DOCUMENTED

    enabled: bool = True
    """Whether the health service scales ACTIVE_ACTIVE load balancers."""
    connection_rate_out: float = Field(default=500.0, ge=0)
    """New connections per second per amphora above which the LB scales out."""
    connection_rate_in: float = Field(default=100.0, ge=0)
    """New connections per second per amphora below which it may scale in."""
    active_connections_out: float = Field(default=2000.0, ge=0)
    """Open connections per amphora above which the LB scales out."""
    active_connections_in: float = Field(default=200.0, ge=0)
    """Open connections per amphora below which it may scale in."""
    cpu_out: float = Field(default=0.8, ge=0)
    """Cores of CPU per amphora's HAProxy above which the LB scales out."""
    cpu_in: float = Field(default=0.2, ge=0)
    """Cores of CPU per amphora's HAProxy below which it may scale in."""
    sustain: float = Field(default=1.0, ge=0)
    """Seconds a rule must hold before it acts."""
    cooldown: float = Field(default=10.0, ge=0)
    """Seconds after a decision during which the LB is not scaled again."""
    interval: float = Field(default=0.5, gt=0)
    """Seconds between the autoscaler's rounds."""

    @model_validator(mode="after")
    def _in_below_out(self) -> ScalingPolicy:
        for name in MEASUREMENTS:
            low, high = self.threshold(name, "in"), self.threshold(name, "out")
            if high and low >= high:
                raise ValueError(f"{name}_in ({low}) must be below {name}_out ({high})")
        return self

    def threshold(self, name: str, side: str) -> float:
        value: float = getattr(self, f"{name}_{side}")
        return value


def policy_with(policy: ScalingPolicy, overrides: Mapping[str, float]) -> ScalingPolicy:
    """``policy`` with a flavor's settings (``AUTOSCALE_OVERRIDES``, validated by the API);
    ``policy`` itself when the two together break a rule (an ``*_in`` of the flavor above the
    deployment's ``*_out``, say)."""
    if not overrides:
        return policy
    try:
        return ScalingPolicy.model_validate(
            {
                **policy.model_dump(),
                **{k: v for k, v in overrides.items() if k in AUTOSCALE_OVERRIDES},
            }
        )
    except ValidationError:
        return policy


@dataclass(frozen=True)
class AmphoraLoad:
    """What one amphora reported lately."""

    connection_rate: float
    active_connections: float
    cpu: float | None = None


@dataclass(frozen=True)
class Tracking:
    """The caller's memory of one LB between rounds (monotonic seconds)."""

    out_since: float | None = None
    in_since: float | None = None
    last_decision: float | None = None


@dataclass(frozen=True)
class Decision:
    """Scale to ``amphorae`` because of ``measurements`` (per amphora) and ``reason``."""

    amphorae: int
    reason: str
    measurements: dict[str, float]


def measure(loads: Sequence[AmphoraLoad]) -> dict[str, float]:
    """The mean per amphora of each measurement (``cpu`` only when every amphora has it)."""
    count = len(loads)
    means = {
        "connection_rate": sum(x.connection_rate for x in loads) / count,
        "active_connections": sum(x.active_connections for x in loads) / count,
    }
    cpus = [x.cpu for x in loads if x.cpu is not None]
    if len(cpus) == count:
        means["cpu"] = sum(cpus) / count
    return means


def decide(
    policy: ScalingPolicy,
    loads: Sequence[AmphoraLoad],
    bounds: AmphoraBounds,
    tracking: Tracking,
    now: float,
    room: int | None = None,
) -> tuple[Decision | None, Tracking]:
    """The decision for an LB whose serving amphorae reported ``loads`` (one each), with
    ``room`` more amphorae allowed by the project's quota (None: no limit)."""
    current = len(loads)
    if current == 0:
        return None, Tracking(last_decision=tracking.last_decision)
    means = measure(loads)
    active = {name: value for name, value in means.items() if policy.threshold(name, "out") > 0}
    hot = {
        name: value / policy.threshold(name, "out")
        for name, value in active.items()
        if value > policy.threshold(name, "out")
    }
    cold = (
        not hot
        and bool(active)
        and current > 1
        and all(
            value < policy.threshold(name, "in")
            and value * current / (current - 1) < policy.threshold(name, "out")
            for name, value in active.items()
        )
    )
    out_since = (now if tracking.out_since is None else tracking.out_since) if hot else None
    in_since = (now if tracking.in_since is None else tracking.in_since) if cold else None
    waiting = Tracking(out_since, in_since, tracking.last_decision)
    last = tracking.last_decision
    if last is not None and now - last < policy.cooldown:
        return None, waiting
    if out_since is not None and now - out_since >= policy.sustain:
        ceiling = bounds.amphora_max if room is None else min(bounds.amphora_max, current + room)
        wanted = max(current + 1, math.ceil(current * max(hot.values())))
        target = min(wanted, ceiling)
        if target > current:
            reason = ", ".join(
                f"{name} {means[name]:g} > {policy.threshold(name, 'out'):g}" for name in hot
            )
            return Decision(target, f"above: {reason}", means), Tracking(last_decision=now)
    if in_since is not None and now - in_since >= policy.sustain and current > bounds.amphora_min:
        reason = ", ".join(
            f"{name} {value:g} < {policy.threshold(name, 'in'):g}" for name, value in active.items()
        )
        return Decision(current - 1, f"below: {reason}", means), Tracking(last_decision=now)
    return None, waiting
