"""The autoscaler: ACTIVE_ACTIVE load balancers scaled from their amphorae's heartbeats.

``observe`` runs for every accepted heartbeat (no I/O): it keeps each amphora's latest load:
its open connections (``conns`` summed over its listeners), its new connections per second
(its ``totconns``, counted since its previous heartbeat, over the time between the two) and
the cores of CPU its HAProxy used since then (``cpu``, when the agent reports it). Every
``interval`` a round judges each ACTIVE ACTIVE_ACTIVE LB with the pure rules of
``domain.autoscale`` (the deployment's policy with its flavor's settings) over its amphorae
that reported within ``_FRESH`` seconds (all of them, else no decision), and a decision
becomes ``ScaleLoadBalancer`` through the LB's repository: ``LoadBalancerScaledOut`` /
``LoadBalancerScaledIn`` on its stream, which the provisioner carries out. The project's
quota has no amphora resource, so the room left is the LB's ``amphora_max``. The cool-down
runs from the moment the decision's event was recorded.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Final

from libs.common.database import DATABASE_ERRORS
from libs.common.domain import commands as c
from libs.common.domain.model import ProvisioningStatus
from libs.common.errors import FulcrumError
from libs.common.events import Metadata
from libs.common.heartbeat_codec import Heartbeat
from libs.common.repository import LoadBalancerRepository
from libs.common.service import Metrics
from services.health.domain.autoscale import (
    AmphoraLoad,
    ScalingPolicy,
    Tracking,
    decide,
    policy_with,
)
from services.health.domain.rollup import LbView

log = logging.getLogger(__name__)

# An amphora's load older than this is not current (three missed beats at the default 1 s).
_FRESH: Final = 3.0


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    load: AmphoraLoad


class Autoscaler:
    """Keeps the latest load of ACTIVE_ACTIVE amphorae and scales their LBs (module doc)."""

    def __init__(
        self, repository: LoadBalancerRepository, policy: ScalingPolicy, metrics: Metrics
    ) -> None:
        self._repo = repository
        self._policy = policy
        self._metrics = metrics
        self._views: dict[str, LbView] = {}
        self._samples: dict[str, _Sample] = {}
        self._tracking: dict[str, Tracking] = {}

    def observe(
        self, view: LbView | None, heartbeat: Heartbeat, cpu: float | None, now: float
    ) -> None:
        """Note the load of an ACTIVE_ACTIVE amphora from its heartbeat (``cpu``: the beat's,
        as ``codec.Beat`` carries it)."""
        if view is None or view.amphora_bounds is None:
            return
        self._views[view.lb_id] = view
        stats = [report.stats for report in heartbeat.listeners.values()]
        previous = self._samples.get(heartbeat.id)
        rate = 0.0
        if previous is not None and now > previous.at:
            # ``totconns`` counts the connections since the amphora's previous heartbeat.
            rate = sum(s.totconns for s in stats) / (now - previous.at)
        load = AmphoraLoad(rate, float(sum(s.conns for s in stats)), cpu)
        self._samples[heartbeat.id] = _Sample(now, load)

    async def run(self) -> None:
        """A round every ``interval`` until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._policy.interval)
            await self.round(loop.time())

    async def round(self, now: float) -> None:
        """Judge every ACTIVE_ACTIVE LB seen lately; scale those the rules say."""
        for lb_id, view in list(self._views.items()):
            fresh = {
                a: s
                for a in view.amphora_ids
                if (s := self._samples.get(a)) and now - s.at < _FRESH
            }
            if not fresh:
                self._forget(lb_id, view)
                continue
            if view.provisioning_status != ProvisioningStatus.ACTIVE:
                continue
            if len(fresh) < len(view.amphora_ids):
                continue  # an amphora is silent or just booted: no decision on half the LB
            assert view.amphora_bounds is not None
            tracking = self._tracking.get(lb_id, Tracking())
            loads = [s.load for s in fresh.values()]
            policy = policy_with(self._policy, dict(view.autoscale))
            decision, self._tracking[lb_id] = decide(
                policy, loads, view.amphora_bounds, tracking, now
            )
            if decision is None:
                continue
            command = c.ScaleLoadBalancer(decision.amphorae, decision.measurements, decision.reason)
            try:
                await self._repo.execute(lb_id, command, Metadata(actor="health:autoscaler"))
            except (FulcrumError, *DATABASE_ERRORS) as exc:
                log.warning("lb %s: scaling to %d refused: %s", lb_id, decision.amphorae, exc)
                continue
            # The cool-down counts from the recorded decision, not from the round's start: an
            # append may take a while, and the next decision's event must come a cool-down
            # after this one's.
            self._tracking[lb_id] = replace(
                self._tracking[lb_id], last_decision=asyncio.get_running_loop().time()
            )
            direction = "out" if decision.amphorae > len(loads) else "in"
            self._metrics.inc(f"autoscale_scaled_{direction}_total")
            log.info(
                "lb %s: scaled %s to %d amphorae (%s)",
                lb_id,
                direction,
                decision.amphorae,
                decision.reason,
            )

    def _forget(self, lb_id: str, view: LbView) -> None:
        """An LB none of whose amphorae reported lately (deleted, or all silent)."""
        del self._views[lb_id]
        self._tracking.pop(lb_id, None)
        for amphora_id in view.amphora_ids:
            self._samples.pop(amphora_id, None)
