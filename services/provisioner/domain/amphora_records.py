"""What the amphora store records when an amphora boots, is torn down, or is given up.

Pure: the events follow from the driver's handle or the amphora's record. An amphora the store
never recorded (its boot failed before it was) gets no teardown event: nothing names it.
"""

from __future__ import annotations

from libs.common.domain.amphora import Amphora, AmphoraStatus
from libs.common.events import Event
from libs.common.events import amphora as amp_ev
from services.provisioner.drivers import AmphoraHandle

_FINAL = frozenset({AmphoraStatus.DELETED, AmphoraStatus.ERROR})


def booted(
    handle: AmphoraHandle,
    loadbalancer_id: str | None = None,
    role: str = "STANDALONE",
    topology: str = "SINGLE",
) -> amp_ev.AmphoraBooted:
    """The amphora runs: for ``loadbalancer_id`` in ``role``, or as a spare (None)."""
    return amp_ev.AmphoraBooted(
        amphora_id=handle.amphora_id,
        driver=handle.driver,
        compute_id=handle.compute_id,
        agent_url=handle.agent_url,
        lb_network_ip=handle.lb_network_ip,
        loadbalancer_id=loadbalancer_id,
        role=role,
        cert_expiration=handle.cert_expiration,
        topology=topology,
    )


def given_up(record: Amphora, amphora_id: str, reason: str) -> list[Event]:
    """Events for an amphora whose build or teardown is given up: ERROR with the reason, for
    an administrator to delete."""
    if record.version == 0 or record.status in _FINAL:
        return []
    return [amp_ev.AmphoraErrored(amphora_id=amphora_id, reason=reason)]


def torn_down(record: Amphora, amphora_id: str) -> list[Event]:
    """Events for an amphora its driver has removed."""
    if record.version == 0 or record.status == AmphoraStatus.DELETED:
        return []
    return [amp_ev.AmphoraDeleted(amphora_id=amphora_id)]
