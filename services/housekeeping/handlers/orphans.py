"""The orphan job: periodically asks the provisioner to reconcile its driver with the store.

Only the provisioner can list and delete what a driver runs, so this job only asks: one
AmphoraReconciliationRequested in a stream of its own (``housekeeping-<run id>``). The
provisioner deletes running amphorae nobody owns (or owns as DELETED) once unowned for the
grace period, and fails amphorae that an ACTIVE LB expects but the driver lacks.
"""

from __future__ import annotations

import logging
import uuid
from typing import Final

from libs.common.events import Metadata
from libs.common.events import housekeeping as hk
from libs.common.eventstore import PostgresEventStore
from libs.common.service import Metrics
from libs.common.streams import StreamId
from services.housekeeping.settings import OrphansJob

log = logging.getLogger(__name__)

META: Final = Metadata(actor="housekeeping")


class OrphanReconciliationJob:
    def __init__(self, store: PostgresEventStore, settings: OrphansJob, metrics: Metrics) -> None:
        self._store = store
        self._settings = settings
        self._metrics = metrics

    async def run_pass(self) -> None:
        request = hk.AmphoraReconciliationRequested(grace_seconds=self._settings.grace)
        await self._store.append(StreamId.housekeeping(str(uuid.uuid4())), 0, [request], META)
        self._metrics.inc("reconciliations_requested_total")
        log.debug("asked the provisioner to reconcile its driver")
