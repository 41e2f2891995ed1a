"""Amphora administration (admin only): fail over, re-push config, delete a broken amphora.

Failover and config act on the amphora's load balancer through its stream (the provisioner
does the work): failover asks to replace this amphora; config records a change-less LB update,
which the provisioner answers by rendering and pushing the whole configuration again. Delete
records the fact on the amphora's own stream; the process goes with housekeeping's
reconciliation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from libs.common.domain import commands as c
from libs.common.domain.amphora import AmphoraStatus
from libs.common.errors import Conflict, InvalidState, NotFound
from libs.common.events import Metadata
from libs.common.events import amphora as amp_ev
from libs.common.repository import AmphoraRepository, LoadBalancerRepository
from services.api.domain.policy import Action, RequestContext, enforce


class LocatedAmphora(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def lb_id(self) -> str | None: ...
    @property
    def project_id(self) -> str: ...
    @property
    def status(self) -> str: ...


class AmphoraLocator(Protocol):
    async def amphora(self, amphora_id: str) -> LocatedAmphora | None: ...


class AmphoraAdministration:
    def __init__(
        self,
        lbs: LoadBalancerRepository,
        amphorae: AmphoraRepository,
        locator: AmphoraLocator,
    ) -> None:
        self._lbs = lbs
        self._amphorae = amphorae
        self._locator = locator

    async def _live(self, ctx: RequestContext, amphora_id: str) -> LocatedAmphora:
        row = await self._locator.amphora(amphora_id)
        if row is None or row.status == AmphoraStatus.DELETED:
            raise NotFound.resource("Amphora", amphora_id)
        enforce(ctx, Action.ADMIN, row.project_id or None)
        return row

    async def _serving(self, ctx: RequestContext, amphora_id: str) -> str:
        """The LB the amphora serves; 409 for a spare, which serves none."""
        row = await self._live(ctx, amphora_id)
        if row.lb_id is None:
            raise Conflict(f"Amphora {amphora_id} is a spare: it serves no load balancer.")
        return row.lb_id

    async def failover(self, ctx: RequestContext, amphora_id: str, meta: Metadata) -> None:
        """The LB must be ACTIVE or ERROR (else 409) and still use the amphora (else 404)."""
        lb_id = await self._serving(ctx, amphora_id)
        await self._lbs.execute(lb_id, c.FailoverLoadBalancer(amphora_id=amphora_id), meta)

    async def push_config(self, ctx: RequestContext, amphora_id: str, meta: Metadata) -> None:
        """Re-apply the LB's configuration; the LB must be ACTIVE or ERROR (else 409)."""
        lb_id = await self._serving(ctx, amphora_id)
        command = c.UpdateLoadBalancer(changes={}, now=datetime.now(UTC))
        await self._lbs.execute(lb_id, command, meta)

    async def delete(self, ctx: RequestContext, amphora_id: str, meta: Metadata) -> None:
        """Only an amphora in ERROR may be deleted (409 otherwise, as Octavia answers)."""
        await self._live(ctx, amphora_id)
        record = await self._amphorae.load(amphora_id)
        if record.status != AmphoraStatus.ERROR:
            raise InvalidState(f"Amphora {amphora_id} is immutable and cannot be updated.")
        await self._amphorae.record(
            amphora_id, [amp_ev.AmphoraDeleted(amphora_id=amphora_id)], meta
        )
