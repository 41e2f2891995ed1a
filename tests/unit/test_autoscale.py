"""The autoscaler's pure decision: thresholds per amphora, proportional scale-out, one step of
scale-in only when the rest stays below the scale-out thresholds (hysteresis), the sustain
time, the cool-down, the bounds and the quota's room."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from libs.common.domain.model import AUTOSCALE_OVERRIDES, AmphoraBounds
from services.health.domain.autoscale import (
    AmphoraLoad,
    ScalingPolicy,
    Tracking,
    decide,
    measure,
    policy_with,
)

POLICY = ScalingPolicy(
    connection_rate_out=100,
    connection_rate_in=20,
    active_connections_out=50,
    active_connections_in=10,
    cpu_out=0.2,
    cpu_in=0.05,
    sustain=1.0,
    cooldown=5.0,
)
BOUNDS = AmphoraBounds(amphora_min=1, amphora_max=4)


def loads(
    rate: float, count: int, active: float = 0, cpu: float | None = None
) -> list[AmphoraLoad]:
    return [AmphoraLoad(rate, active, cpu) for _ in range(count)]


def test_measurements_are_means_per_amphora_and_cpu_only_when_all_report_it() -> None:
    mixed = [AmphoraLoad(10, 4, 0.1), AmphoraLoad(30, 8, None)]
    assert measure(mixed) == {"connection_rate": 20, "active_connections": 6}
    assert measure(loads(10, 2, 4, 0.1))["cpu"] == pytest.approx(0.1)


def test_scale_out_after_the_sustain_time_in_proportion_to_the_load() -> None:
    decision, tracking = decide(POLICY, loads(250, 1), BOUNDS, Tracking(), now=10.0)
    assert decision is None and tracking.out_since == 10.0  # holding, not sustained yet
    decision, tracking = decide(POLICY, loads(250, 1), BOUNDS, tracking, now=10.5)
    assert decision is None and tracking.out_since == 10.0
    decision, tracking = decide(POLICY, loads(250, 1), BOUNDS, tracking, now=11.0)
    assert decision is not None and decision.amphorae == 3  # ceil(1 * 250 / 100)
    assert decision.measurements == {"connection_rate": 250, "active_connections": 0}
    assert "connection_rate 250 > 100" in decision.reason
    assert tracking == Tracking(last_decision=11.0)
    # A dip below the threshold restarts the sustain clock.
    _, held = decide(POLICY, loads(250, 1), BOUNDS, Tracking(), now=0.0)
    _, dipped = decide(POLICY, loads(90, 1), BOUNDS, held, now=0.5)
    assert dipped.out_since is None


def test_the_bounds_the_quota_and_the_cooldown_cap_every_decision() -> None:
    hot = loads(1000, 2, cpu=0.9)
    decision, _ = decide(POLICY, hot, BOUNDS, Tracking(out_since=0.0), now=2.0)
    assert decision is not None and decision.amphorae == 4  # amphora_max
    decision, _ = decide(POLICY, hot, BOUNDS, Tracking(out_since=0.0), now=2.0, room=1)
    assert decision is not None and decision.amphorae == 3
    decision, _ = decide(POLICY, hot, BOUNDS, Tracking(out_since=0.0), now=2.0, room=0)
    assert decision is None
    at_max = loads(1000, 4)
    assert decide(POLICY, at_max, BOUNDS, Tracking(out_since=0.0), now=2.0)[0] is None
    cooling = Tracking(out_since=0.0, last_decision=0.0)
    decision, tracking = decide(POLICY, hot, BOUNDS, cooling, now=4.0)
    assert decision is None and tracking.out_since == 0.0
    assert decide(POLICY, hot, BOUNDS, tracking, now=5.0)[0] is not None
    assert decide(POLICY, [], BOUNDS, cooling, now=9.0) == (None, Tracking(last_decision=0.0))


def test_scale_in_one_step_only_when_the_rest_stays_below_the_out_thresholds() -> None:
    quiet = loads(5, 3, active=2, cpu=0.01)
    decision, tracking = decide(POLICY, quiet, BOUNDS, Tracking(), now=0.0)
    assert decision is None and tracking.in_since == 0.0
    decision, tracking = decide(POLICY, quiet, BOUNDS, tracking, now=1.0)
    assert decision is not None and decision.amphorae == 2 and "below" in decision.reason
    # Two amphorae below every "in" threshold: one carries 38/s and 18 open, under "out".
    assert decide(POLICY, loads(19, 2, 9), BOUNDS, Tracking(in_since=0.0), now=1.0)[0]
    # Hysteresis: with "in" close to "out", two amphorae at 80/s stay two (one would be 160).
    close = POLICY.model_copy(update={"connection_rate_in": 90.0})
    assert decide(close, loads(80, 2), BOUNDS, Tracking(in_since=0.0), now=1.0)[0] is None
    # Never below amphora_min, nor with one amphora.
    two = AmphoraBounds(amphora_min=2, amphora_max=4)
    assert decide(POLICY, loads(1, 2), two, Tracking(in_since=0.0), now=1.0)[0] is None
    assert decide(POLICY, loads(1, 1), BOUNDS, Tracking(in_since=0.0), now=1.0)[0] is None
    # A measurement above its "in" threshold keeps the LB as it is.
    assert decide(POLICY, loads(30, 3), BOUNDS, Tracking(in_since=0.0), now=1.0)[0] is None


def test_a_policy_needs_every_in_threshold_below_its_out_threshold() -> None:
    with pytest.raises(ValidationError, match="cpu_in"):
        ScalingPolicy(cpu_in=0.9, cpu_out=0.8)
    off = ScalingPolicy(connection_rate_out=0, active_connections_out=0, cpu_out=0)
    assert decide(off, loads(1e6, 2), BOUNDS, Tracking(out_since=0.0), now=9.0)[0] is None
    assert decide(off, loads(0, 2), BOUNDS, Tracking(in_since=0.0), now=9.0)[0] is None


def test_a_flavor_overrides_the_deployment_policy_unless_the_two_clash() -> None:
    assert AUTOSCALE_OVERRIDES <= set(ScalingPolicy.model_fields)
    assert policy_with(POLICY, {}) is POLICY
    flavored = policy_with(POLICY, {"connection_rate_out": 400.0, "cooldown": 0.0})
    assert (flavored.connection_rate_out, flavored.cooldown) == (400.0, 0.0)
    assert flavored.cpu_out == POLICY.cpu_out
    # 250/s scales the deployment's LBs out, not the flavor's.
    assert decide(flavored, loads(250, 1), BOUNDS, Tracking(out_since=0.0), now=2.0)[0] is None
    # A flavor's "in" above the deployment's "out": the deployment's policy stands.
    assert policy_with(POLICY, {"cpu_in": 0.5}) is POLICY
