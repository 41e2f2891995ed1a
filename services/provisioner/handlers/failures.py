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
from libs.common.repository import LoadBalancerRepository

log = logging.getLogger(__name__)


class FailoverRequests:
    """Consumer of ``AmphoraFailed``: asks the amphora's LB to fail over (the lifecycle
    consumer then replaces the amphora)."""

    def __init__(self, lbs: LoadBalancerRepository) -> None:
        self._lbs = lbs

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
