"""Failed amphorae of load balancers, turned into failover requests on their LB.

A spare's failure is not this handler's: the maintenance consumer removes the spare.
"""

from __future__ import annotations

import logging

import asyncpg

from libs.common.domain import commands as c
from libs.common.errors import InvalidState, NotFound
from libs.common.events import Envelope
from libs.common.events import amphora as amp_ev
from libs.common.metrics import Metrics
from libs.common.repository import LoadBalancerRepository

log = logging.getLogger(__name__)


class FailoverRequests:
    """Consumer of ``AmphoraFailed``: asks the amphora's LB to fail over (the lifecycle
    consumer then replaces the amphora)."""

    def __init__(self, lbs: LoadBalancerRepository, metrics: Metrics | None = None) -> None:
        self._lbs = lbs
        self._failovers = (
            metrics.counter(
                "failovers_requested_total",
                "Failovers requested for failed amphorae, by cause (heartbeat_missing: silent "
                "past the timeout; amphora_failed: any other failure report).",
                ["cause"],
            )
            if metrics is not None
            else None
        )

    async def handle(self, envelope: Envelope, conn: asyncpg.Connection) -> None:
        payload = envelope.payload
        assert isinstance(payload, amp_ev.AmphoraFailed)
        if payload.loadbalancer_id is None:
            return
        command = c.FailoverLoadBalancer(payload.amphora_id, reason=payload.reason)
        try:
            await self._lbs.execute(
                payload.loadbalancer_id, command, envelope.metadata.caused_by(envelope), conn=conn
            )
        except (InvalidState, NotFound) as exc:
            # The LB is being deleted or changed: its own flow replaces what is missing.
            log.warning("amphora %s failed but no failover: %s", payload.amphora_id, exc)
            return
        if self._failovers is not None:
            self._failovers.labels(failover_cause(payload.reason)).inc()


def failover_cause(reason: str) -> str:
    """The ``cause`` label of a failure report's reason (stale scan: services/health)."""
    if reason.startswith(("no heartbeat", "never sent a heartbeat")):
        return "heartbeat_missing"
    return "amphora_failed"
