"""The agent's TLS waits for certificate files a container driver copies in after the start."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest

from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.amphora.adapters.tls import AgentTLS


def _paths(directory: Path) -> tuple[Path, Path, Path]:
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


async def test_certificates_copied_in_late_and_in_pieces_are_awaited(tmp_path: Path) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    issued = ca.issue_server_cert("amp-1", ["amp-1"], 1)
    ca_file, cert_file, key_file = _paths(tmp_path / "delivered")

    async def deliver() -> None:
        await asyncio.sleep(0.05)
        write_private_file(ca_file, ca.cert_pem, mode=0o644)
        write_private_file(cert_file, issued.cert_pem, mode=0o644)
        write_private_file(key_file, issued.key_pem[: len(issued.key_pem) // 2])  # mid-copy
        await asyncio.sleep(0.05)
        write_private_file(key_file, issued.key_pem)

    delivery = asyncio.create_task(deliver())
    tls = await AgentTLS.delivered(ca_file, cert_file, key_file, wait=5.0)
    await delivery
    assert tls.context.verify_mode == ssl.CERT_REQUIRED


async def test_missing_certificates_fail_after_the_wait(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(OSError):
        await AgentTLS.delivered(*_paths(tmp_path), wait=0.1)
    assert 0.1 <= time.monotonic() - started < 2.0
    with pytest.raises(OSError):  # no wait: the files must be there
        await AgentTLS.delivered(*_paths(tmp_path), wait=0.0)
