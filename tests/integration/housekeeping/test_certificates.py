"""Certificates: an amphora whose agent certificate nears expiry gets a new one from the
deployment CA while traffic runs through its VIP with no failed request; the CA's own expiry is
reported on /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from cryptography import x509

from libs.common.domain import commands as c
from libs.common.events import amphora as amp_ev
from libs.common.pki import DeploymentCA
from libs.common.service import METRICS
from services.housekeeping.settings import CertificatesJob
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from tests.integration.housekeeping.conftest import (
    META,
    Backend,
    Plant,
    eventually,
    free_port,
    http_lb,
    wait_status,
)

LOAD_WORKERS = 4
LOAD_LIMIT = 4000  # requests, at most
LOAD_SECONDS = 30.0  # at most


class Load:
    """A few clients sending requests through the VIP until stopped (bounded in count/time)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _client(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self.ok + len(self.failed) >= LOAD_LIMIT:
                    return
                try:
                    async with session.get(self.url, headers={"Connection": "close"}) as resp:
                        await resp.read()
                        if resp.status == 200:
                            self.ok += 1
                        else:
                            self.failed.append(f"HTTP {resp.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.failed.append(repr(exc))
                await asyncio.sleep(0.002)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(LOAD_WORKERS)]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def served_certificate(agent_url: str, ca_dir: Path) -> x509.Certificate:
    """The certificate the agent presents to a new TLS connection (mutual TLS)."""
    host, port = agent_url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    context.check_hostname = False
    context.load_cert_chain(ca_dir / "provisioner-client.pem", ca_dir / "provisioner-client.key")
    _, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


async def test_a_certificate_near_expiry_is_rotated_under_load_with_no_failed_request(
    plant: Plant, backends: list[Backend]
) -> None:
    await plant.start_provisioner()
    vip = "127.77.84.10"
    port = free_port(vip)
    command = http_lb(vip, port, backends[:2])
    lb_id = command.loadbalancer.id
    await plant.repo.execute(lb_id, command, META)
    state = await wait_status(plant.repo, lb_id, "ACTIVE")
    amphora_id = state.amphora_ids[0]
    record = await plant.amphorae.load(amphora_id)
    ca_dir = plant.provisioner_settings.ca_dir

    # Age the amphora: its agent now holds a certificate that expires tomorrow.
    short = DeploymentCA.load_or_create(ca_dir).issue_server_cert(
        amphora_id, [amphora_id, "127.0.0.1"], validity_days=1
    )
    async with AmphoraAgentClient(
        record.agent_url,
        ca_dir / "ca.pem",
        ca_dir / "provisioner-client.pem",
        ca_dir / "provisioner-client.key",
        server_name=amphora_id,
    ) as client:
        await client.rotate_server_certificate(short.cert_pem, short.key_pem)
    expiring = short.not_after.isoformat()
    rotated = amp_ev.AmphoraCertificateRotated(amphora_id=amphora_id, cert_expiration=expiring)
    await plant.amphorae.record(amphora_id, [rotated], META)
    old = await served_certificate(record.agent_url, ca_dir)
    assert old.not_valid_after_utc < datetime.now(UTC) + timedelta(days=2)

    load = Load(f"http://{vip}:{port}/")
    load.start()
    try:
        await asyncio.sleep(0.3)
        await plant.start_housekeeping(
            certificates=CertificatesJob(interval=0.3, ca_cert=ca_dir / "ca.pem")
        )

        async def renewed() -> bool:
            current = await plant.amphorae.load(amphora_id)
            return current.cert_expiration not in (None, expiring)

        await eventually(renewed, what="the certificate rotation recorded")
        await asyncio.sleep(0.3)  # traffic keeps flowing after the swap
    finally:
        await load.stop()
    assert load.failed == [] and load.ok > 50

    current = await plant.amphorae.load(amphora_id)
    assert current.cert_expiration is not None
    recorded = datetime.fromisoformat(current.cert_expiration)
    assert recorded > datetime.now(UTC) + timedelta(days=20)
    served = await served_certificate(record.agent_url, ca_dir)
    assert served.serial_number != old.serial_number
    assert served.not_valid_after_utc == recorded
    # The provisioner still talks to the agent (the new certificate names the amphora).
    update = c.UpdateLoadBalancer({"name": "after-rotation"}, datetime.now(UTC))
    await plant.repo.execute(lb_id, update, META)
    await wait_status(plant.repo, lb_id, "ACTIVE")

    assert plant.housekeeping is not None
    metrics = plant.housekeeping[METRICS].render()
    line = next(x for x in metrics.splitlines() if x.startswith("fulcrum_housekeeping_ca_exp"))
    assert float(line.split()[-1]) > 300 * 86400  # the CA is valid for ten years
