"""Security group changes made live: when a group's rules change (or the group goes), every
live load balancer naming it in ``vip_sg_ids`` gets its VIP filter pushed again to each of its
running amphorae, without touching the LB's status.

Each LB is taken under the lifecycle's advisory lock, so the push never interleaves with a
configuration push of the same LB; the LB's state is read after the lock (a concurrent change
of ``vip_sg_ids`` is then either already in it or pushes the filter itself). An amphora that
cannot be reached is logged and left to the next push (failover or the next change).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import asyncpg

from libs.common.domain.model import LoadBalancerState
from libs.common.errors import FulcrumError
from libs.common.events import Envelope
from libs.common.events import security_group as sg_ev
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from services.provisioner.adapters.security_groups import StoredSecurityGroups
from services.provisioner.drivers import AmphoraDriver, AmphoraHandle

log = logging.getLogger(__name__)

PushGroups = Callable[[LoadBalancerState, AmphoraHandle], Awaitable[None]]
# The events that change what a group lets in.
_RULE_CHANGES = (
    sg_ev.SecurityGroupRuleAdded,
    sg_ev.SecurityGroupRuleRemoved,
    sg_ev.SecurityGroupDeleted,
)


class SecurityGroupChanges:
    """Consumer of the ``securitygroup`` events."""

    def __init__(
        self,
        store: PostgresEventStore,
        groups: StoredSecurityGroups,
        driver: AmphoraDriver,
        push: PushGroups,
    ) -> None:
        self._lbs = LoadBalancerRepository(store)
        self._groups = groups
        self._driver = driver
        self._push = push

    async def handle(self, envelope: Envelope, conn: asyncpg.Connection) -> None:
        if not isinstance(envelope.payload, _RULE_CHANGES):
            return
        lb_ids = await self._groups.referring(conn, envelope.aggregate_id)
        if not lb_ids:
            return
        running = {h.amphora_id: h for h in await self._driver.list()}
        for lb_id in lb_ids:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", lb_id)
            state = await self._lbs.load(lb_id)
            for amphora_id in state.amphora_ids:
                handle = running.get(amphora_id)
                if handle is None:
                    continue
                try:
                    await self._push(state, handle)
                except FulcrumError as exc:
                    log.warning(
                        "lb %s: security groups not pushed to amphora %s: %s",
                        lb_id,
                        amphora_id,
                        exc,
                    )
