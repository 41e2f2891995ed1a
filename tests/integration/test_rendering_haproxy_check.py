"""Every golden HAProxy configuration passes the real `haproxy -c`, without a warning.

The golden files name amphora files under GOLDEN_STATE_DIR; each check swaps that prefix for
a temporary directory where the certificates, CRLs and server-state file really exist.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from libs.common.pki import DeploymentCA
from tests.unit.test_rendering import (
    EXAMPLES,
    GOLDEN_STATE_DIR,
    LISTENER_CLIENT_CA,
    LISTENER_CLIENT_CRL,
    LISTENER_CRT_LIST,
    POOL_CA,
    POOL_CLIENT_CERT,
    POOL_CRL,
    golden_path,
)

HAPROXY: Final = Path("/usr/sbin/haproxy")


def _crl(ca: DeploymentCA) -> bytes:
    now = datetime.now(UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - timedelta(minutes=5))
        .next_update(now + timedelta(days=1))
        .sign(ca.key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def _local(path: str, state_dir: Path) -> Path:
    return state_dir / Path(path).relative_to(GOLDEN_STATE_DIR)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir holding every file the golden contexts name."""
    root = tmp_path_factory.mktemp("amphora-state")
    (root / "servers-state").write_text("1\n")
    ping = root / "ping-check.sh"
    ping.write_text("#!/bin/sh\nexit 0\n")
    ping.chmod(0o755)
    ca = DeploymentCA.load_or_create(root / "ca")
    server = ca.issue_server_cert("lb.example.com", ["lb.example.com"])
    client = ca.issue_client_cert("fulcrum-amphora")
    files = {
        LISTENER_CLIENT_CA: ca.cert_pem,
        LISTENER_CLIENT_CRL: _crl(ca),
        POOL_CA: ca.cert_pem,
        POOL_CRL: _crl(ca),
        POOL_CLIENT_CERT: client.cert_pem + client.key_pem,
    }
    server_pem = _local(f"{GOLDEN_STATE_DIR}/certs/listener-default.pem", root)
    for path, data in files.items():
        _local(path, root).parent.mkdir(parents=True, exist_ok=True)
        _local(path, root).write_bytes(data)
    server_pem.write_bytes(server.cert_pem + server.key_pem)
    _local(LISTENER_CRT_LIST, root).write_text(f"{server_pem}\n")
    return root


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_golden_config_passes_haproxy_check(example: str, state_dir: Path) -> None:
    golden = golden_path(example)
    assert golden.exists(), f"missing golden file {golden}"
    config = state_dir / f"{example}.cfg"
    config.write_text(golden.read_text().replace(GOLDEN_STATE_DIR, str(state_dir)))
    result = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Configuration file is valid" in output, output
    assert "[WARNING]" not in output and "[ALERT]" not in output, output
