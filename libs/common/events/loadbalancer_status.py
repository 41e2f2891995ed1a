"""Events of the ``lbstatus-<lb id>`` stream: what health observed of a load balancer's tree.

Observed operating statuses live apart from the ``loadbalancer-<id>`` stream (intent and
provisioning) so that a member flapping for a year never lengthens the stream every write to
the load balancer reads. The repository folds both streams into one state, in commit order.
Streams written before this split hold ``OperatingStatusChanged`` in ``loadbalancer-<id>``;
they fold the same way.
"""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._registry import Event


class LoadBalancerStatusEvent(Event):
    category: ClassVar[str] = "lbstatus"


class OperatingStatusChanged(LoadBalancerStatusEvent, name="OperatingStatusChanged"):
    """Observed operating statuses that changed, by resource id (from health), on stream
    ``lbstatus-<lb id>`` with ``metadata.project_id`` the LB's project. They have their own
    stream so that flaps never lengthen ``loadbalancer-<lb id>`` (intent and provisioning),
    which every write to the LB reads; the read model folds both. Streams written before the
    split hold this event in ``loadbalancer-<lb id>`` (subject category ``loadbalancer``)."""

    statuses: dict[str, str]
