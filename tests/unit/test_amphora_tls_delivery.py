"""The agent's TLS waits for certificate files a container driver copies in after the start."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest

from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.amphora.adapters.tls import (
    _PREPARED,
    AgentTLS,
    prepare_verifying_context,
    server_ssl_context,
)


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


def _identity(directory: Path, ca: DeploymentCA, name: str) -> tuple[Path, Path]:
    issued = ca.issue_server_cert(name, [name], 1)
    write_private_file(directory / f"{name}.pem", issued.cert_pem, mode=0o644)
    write_private_file(directory / f"{name}.key", issued.key_pem)
    return directory / f"{name}.pem", directory / f"{name}.key"


def _subjects(context: ssl.SSLContext) -> list[object]:
    return [entry["subject"] for entry in context.get_ca_certs()]


def test_a_prepared_verifying_context_is_taken_once_and_only_for_its_ca(tmp_path: Path) -> None:
    """The zygote prepares the CA part before forking; each agent process takes it once: a
    second server (an agent host's next amphora) builds its own, since a context presents
    one certificate. A CA file replaced since is loaded afresh."""
    ca = DeploymentCA.load_or_create(tmp_path / "ca", common_name="first CA")
    ca_file = tmp_path / "ca.pem"
    write_private_file(ca_file, ca.cert_pem, mode=0o644)
    one, two = _identity(tmp_path, ca, "amp-1"), _identity(tmp_path, ca, "amp-2")

    prepare_verifying_context(ca_file)
    prepared = _PREPARED[str(ca_file)][1]
    prepare_verifying_context(ca_file)  # the same file: kept, not built again
    assert _PREPARED[str(ca_file)][1] is prepared
    first = server_ssl_context(ca_file, *one)
    second = server_ssl_context(ca_file, *two)
    assert first is prepared and second is not prepared
    for context in (first, second):
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
        assert _subjects(context) == _subjects(server_ssl_context(ca_file, *one))

    prepare_verifying_context(ca_file)
    stale = _PREPARED[str(ca_file)][1]
    other = DeploymentCA.load_or_create(tmp_path / "other", common_name="second CA")
    write_private_file(ca_file, other.cert_pem, mode=0o644)  # replaced after the preparation
    replaced = server_ssl_context(ca_file, *_identity(tmp_path, other, "amp-3"))
    assert replaced is not stale
    assert _subjects(replaced) == [((("commonName", "second CA"),),)]

    prepare_verifying_context(tmp_path / "absent.pem")  # left for the agent to report
    assert str(tmp_path / "absent.pem") not in _PREPARED
