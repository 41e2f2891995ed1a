"""What the amphora store records of the provisioner's work: every amphora event it writes.

An amphora boots, is claimed, fails, gets a new certificate, is torn down or given up. Pure:
the events follow from the driver's handle or the amphora's record. An amphora the store
never recorded (its boot failed before it was) gets no teardown event: nothing names it.
"""

from __future__ import annotations

from collections.abc import Sequence

from libs.common.domain.amphora import Amphora, AmphoraStatus, evolve_amphora
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
        host=handle.host,
    )


def allocated(amphora_id: str, loadbalancer_id: str) -> amp_ev.AmphoraAllocated:
    """A spare is the LB's amphora now."""
    return amp_ev.AmphoraAllocated(amphora_id=amphora_id, loadbalancer_id=loadbalancer_id)


def failed(
    amphora_id: str, reason: str, loadbalancer_id: str | None = None
) -> amp_ev.AmphoraFailed:
    """The amphora is broken: an LB's fails over, a spare is replaced."""
    return amp_ev.AmphoraFailed(
        amphora_id=amphora_id, loadbalancer_id=loadbalancer_id, reason=reason
    )


def deleted(amphora_id: str) -> amp_ev.AmphoraDeleted:
    """The amphora is gone."""
    return amp_ev.AmphoraDeleted(amphora_id=amphora_id)


def certificate_rotated(amphora_id: str, expiration: str) -> amp_ev.AmphoraCertificateRotated:
    """The agent serves a new certificate, valid until ``expiration`` (ISO 8601)."""
    return amp_ev.AmphoraCertificateRotated(amphora_id=amphora_id, cert_expiration=expiration)


def given_up(
    record: Amphora, amphora_id: str, reason: str, unrecorded: Sequence[Event] = ()
) -> list[Event]:
    """Events for an amphora whose build or teardown is given up: ERROR with the reason, for
    an administrator to delete. ``unrecorded``: what the build did to it that the store does
    not know yet (its boot, its allocation), recorded first."""
    after = record
    for event in unrecorded:
        after = evolve_amphora(after, event)
    if after.version == 0 or after.status in _FINAL:
        return list(unrecorded)
    return [*unrecorded, amp_ev.AmphoraErrored(amphora_id=amphora_id, reason=reason)]


def torn_down(record: Amphora, amphora_id: str) -> list[Event]:
    """Events for an amphora its driver has removed."""
    if record.version == 0 or record.status == AmphoraStatus.DELETED:
        return []
    return [deleted(amphora_id)]
