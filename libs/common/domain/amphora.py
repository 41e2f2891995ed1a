"""The Amphora aggregate: one amphora's record, folded from its ``amphora-<id>`` stream."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from libs.common.events import Event
from libs.common.events import amphora as ev
from libs.common.events import housekeeping as hk


class AmphoraStatus(StrEnum):
    BOOTING = "BOOTING"
    READY = "READY"
    ALLOCATED = "ALLOCATED"
    PENDING_DELETE = "PENDING_DELETE"
    DELETED = "DELETED"
    ERROR = "ERROR"
    FAILOVER_STOPPED = "FAILOVER_STOPPED"


class Amphora(BaseModel):
    """What the control plane knows of one amphora (``agent_url`` is internal)."""

    model_config = ConfigDict(frozen=True)

    version: int = 0
    id: str = ""
    status: AmphoraStatus = AmphoraStatus.BOOTING
    loadbalancer_id: str | None = None
    driver: str = ""
    compute_id: str = ""
    agent_url: str = ""
    lb_network_ip: str = ""
    role: str = "STANDALONE"
    vrrp_ip: str | None = None
    ha_ip: str | None = None
    cert_expiration: str | None = None
    topology: str = "SINGLE"
    failure_reason: str = ""
    host: str = ""


def evolve_amphora(state: Amphora, event: Event) -> Amphora:
    """Pure fold step; unknown events only bump the version."""
    update: dict[str, object] = {"version": state.version + 1}
    match event:
        case ev.AmphoraBooted():
            update.update(
                id=event.amphora_id,
                driver=event.driver,
                compute_id=event.compute_id,
                agent_url=event.agent_url,
                lb_network_ip=event.lb_network_ip,
                loadbalancer_id=event.loadbalancer_id,
                role=event.role,
                vrrp_ip=event.vrrp_ip,
                ha_ip=event.ha_ip,
                cert_expiration=event.cert_expiration,
                topology=event.topology,
                host=event.host,
                status=AmphoraStatus.ALLOCATED if event.loadbalancer_id else AmphoraStatus.READY,
            )
        case ev.AmphoraAllocated():
            update.update(
                loadbalancer_id=event.loadbalancer_id,
                role=event.role,
                status=AmphoraStatus.ALLOCATED,
            )
        case ev.AmphoraFailed():
            update.update(status=AmphoraStatus.PENDING_DELETE, failure_reason=event.reason)
        case ev.AmphoraErrored():
            update.update(status=AmphoraStatus.ERROR, failure_reason=event.reason)
        case ev.AmphoraDeleted():
            update.update(status=AmphoraStatus.DELETED)
        case ev.AmphoraCertificateRotated():
            update.update(cert_expiration=event.cert_expiration)
        case hk.SpareAmphoraRequested():
            update.update(id=event.amphora_id, status=AmphoraStatus.BOOTING)
        case hk.SpareAmphoraRetirementRequested():
            update.update(status=AmphoraStatus.PENDING_DELETE)
    return state.model_copy(update=update)


def fold_amphora(events: Iterable[Event]) -> Amphora:
    state = Amphora()
    for event in events:
        state = evolve_amphora(state, event)
    return state
