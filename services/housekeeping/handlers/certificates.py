"""The certificate job: asks for the rotation of amphora server certificates before they
expire, and reports the deployment CA's expiry.

Amphorae whose certificate expires within ``expiry_buffer`` get an
AmphoraCertificateRotationRequested naming the expiry as recorded; the provisioner issues a
new certificate from the deployment CA, installs it on the agent (new TLS connections only:
HAProxy never reloads, traffic never blips) and records AmphoraCertificateRotated. A request
still unanswered after ``retry_after`` is repeated; a repeated one that finds the certificate
already rotated does nothing.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import Final

import asyncpg

from libs.common.certificate_checks import certificate_not_after
from libs.common.events import Metadata
from libs.common.events import housekeeping as hk
from libs.common.repository import AmphoraRepository
from libs.common.service import Metrics
from services.housekeeping.adapters import postgres
from services.housekeeping.settings import CertificatesJob

log = logging.getLogger(__name__)

META: Final = Metadata(actor="housekeeping")


class CertificateRotationJob:
    """``ca_expires_in`` is the CA's remaining validity in seconds (NaN until read)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        amphorae: AmphoraRepository,
        settings: CertificatesJob,
        metrics: Metrics,
    ) -> None:
        self._pool = pool
        self._amphorae = amphorae
        self._settings = settings
        self._metrics = metrics
        # (amphora id, recorded expiry) -> when this replica asked for its rotation.
        self._asked: dict[tuple[str, str], float] = {}
        self.ca_expires_in = math.nan
        metrics.gauge("ca_expires_in_seconds", lambda: self.ca_expires_in)

    async def run_pass(self) -> None:
        self.report_ca()
        await self.request_rotations()

    async def request_rotations(self) -> list[str]:
        """Ask for every due rotation not asked for recently; returns the amphora ids."""
        expiring = await postgres.expiring_certificates(self._pool, self._settings.expiry_buffer)
        now = time.monotonic()
        self._asked = {
            key: at for key, at in self._asked.items() if now - at < self._settings.retry_after
        }
        asked = []
        for cert in expiring:
            key = (cert.amphora_id, cert.cert_expiration)
            if key in self._asked:
                continue
            request = hk.AmphoraCertificateRotationRequested(
                amphora_id=cert.amphora_id, cert_expiration=cert.cert_expiration
            )
            await self._amphorae.record(cert.amphora_id, [request], META)
            self._asked[key] = now
            asked.append(cert.amphora_id)
            self._metrics.inc("cert_rotations_requested_total")
            log.info(
                "amphora %s: certificate expires %s; rotation requested",
                cert.amphora_id,
                cert.expires_at.isoformat(),
            )
        return asked

    def report_ca(self) -> None:
        """Read the CA certificate's expiry into the gauge; warn when it is near."""
        path = self._settings.ca_cert
        if path is None:
            return
        try:
            not_after = certificate_not_after(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("deployment CA certificate %s unreadable: %s", path, exc)
            return
        first = math.isnan(self.ca_expires_in)
        self.ca_expires_in = (not_after - datetime.now(UTC)).total_seconds()
        days = self.ca_expires_in / 86400
        if self.ca_expires_in < self._settings.ca_warning:
            log.warning(
                "deployment CA %s expires %s (in %.0f days): renew it and re-issue the "
                "amphora and client certificates before then",
                path,
                not_after.isoformat(),
                days,
            )
        elif first:
            log.info("deployment CA %s valid until %s (%.0f days)", path, not_after, days)
