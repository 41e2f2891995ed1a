"""Housekeeping's requests: decisions of the housekeeping service, carried out by the provisioner.

Only the provisioner touches drivers, so housekeeping asks through these events and the
provisioner acts on them idempotently. Requests about one amphora live in its ``amphora-<id>``
stream, the re-drive of stranded work in the LB's ``loadbalancer-<id>`` stream, and the
deployment-wide reconciliation of drivers against the store in a ``housekeeping-<run id>``
stream of its own (one event each).
"""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._registry import Event
from libs.common.events.amphora import AmphoraEvent
from libs.common.events.loadbalancer import LoadBalancerEvent


class HousekeepingEvent(Event):
    category: ClassVar[str] = "housekeeping"


class SpareAmphoraRequested(AmphoraEvent, name="SpareAmphoraRequested"):
    """The spare pool needs one more amphora: boot ``amphora_id`` with no load balancer.

    The amphora is BOOTING until the provisioner records AmphoraBooted (READY). Idempotent by
    the id: a redelivered request finds the amphora it already started.
    """

    amphora_id: str
    reason: str = ""


class SpareAmphoraRetirementRequested(AmphoraEvent, name="SpareAmphoraRetirementRequested"):
    """A spare (BOOTING or READY) is not wanted any more: it goes PENDING_DELETE at once, so it
    is never claimed, and the provisioner deletes it."""

    amphora_id: str
    reason: str = ""


class AmphoraCertificateRotationRequested(AmphoraEvent, name="AmphoraCertificateRotationRequested"):
    """The agent's server certificate (``cert_expiration``, as recorded) expires soon: issue a
    new one and install it. A request whose ``cert_expiration`` is no longer the recorded one
    was already served and is ignored."""

    amphora_id: str
    cert_expiration: str | None = None


class LoadBalancerRedriveRequested(LoadBalancerEvent, name="LoadBalancerRedriveRequested"):
    """The LB's ``pending_status`` work outlived its bound: the provisioner reconciles it again.

    ``attempt`` counts the re-drives of this pending period (1-based); ``pending_seconds`` is
    how long the LB had been pending when housekeeping asked.
    """

    attempt: int
    pending_status: str
    pending_seconds: float


class AmphoraReconciliationRequested(HousekeepingEvent, name="AmphoraReconciliationRequested"):
    """Compare what the driver runs with the amphora store: delete amphorae nobody owns (or
    owned as DELETED) once unowned for ``grace_seconds``; fail amphorae an ACTIVE LB expects
    but the driver lacks, and READY spares that no longer run."""

    grace_seconds: float


__all__ = [
    "AmphoraCertificateRotationRequested",
    "AmphoraReconciliationRequested",
    "HousekeepingEvent",
    "LoadBalancerRedriveRequested",
    "SpareAmphoraRequested",
    "SpareAmphoraRetirementRequested",
]
