"""The autoscaler's cool-down runs from the moment a decision's event was recorded, not from
the start of the round that took it (the rules are ``domain.autoscale``'s; the repository here
only takes its time, as a slow append does)."""

from __future__ import annotations

import asyncio
from typing import Any

from libs.common.domain.model import AmphoraBounds, ProvisioningStatus
from libs.common.heartbeat_codec import Heartbeat, ListenerReport, ListenerStats
from libs.common.metrics import Metrics
from services.health.domain.autoscale import ScalingPolicy
from services.health.domain.rollup import LbView
from services.health.handlers.autoscaler import Autoscaler

APPEND = 0.3  # seconds the repository takes to record a decision
POLICY = ScalingPolicy(active_connections_out=50, active_connections_in=10, sustain=0, cooldown=1.0)
VIEW = LbView(
    lb_id="lb",
    version=1,
    provisioning_status=ProvisioningStatus.ACTIVE,
    admin_up=True,
    listeners=(),
    pools=(),
    amphora_ids=frozenset({"amp"}),
    current={},
    expected_listeners=frozenset(),
    amphora_bounds=AmphoraBounds(amphora_min=1, amphora_max=8),
)
BUSY = Heartbeat(
    id="amp",
    seq=1,
    ver=1,
    listeners={"l": ListenerReport(status="OPEN", stats=ListenerStats(conns=100))},
)


class SlowRepository:
    def __init__(self) -> None:
        self.recorded: list[Any] = []

    async def execute(self, lb_id: str, command: Any, metadata: Any) -> None:
        await asyncio.sleep(APPEND)
        self.recorded.append(command)


async def test_the_cooldown_counts_from_the_recorded_decision() -> None:
    repository = SlowRepository()
    scaler = Autoscaler(repository, POLICY, Metrics("test"))  # type: ignore[arg-type]
    start = asyncio.get_running_loop().time()
    scaler.observe(VIEW, BUSY, None, start)

    await scaler.round(start)  # scales out; recorded APPEND s later
    assert len(repository.recorded) == 1

    # A cool-down after the round's start, but not after the decision was recorded: none.
    late = start + POLICY.cooldown + APPEND / 2
    scaler.observe(VIEW, BUSY, None, late)
    await scaler.round(late)
    assert len(repository.recorded) == 1

    # A cool-down after it was recorded: the next decision.
    later = asyncio.get_running_loop().time() + POLICY.cooldown
    scaler.observe(VIEW, BUSY, None, later)
    await scaler.round(later)
    assert len(repository.recorded) == 2
