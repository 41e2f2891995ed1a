"""The provisioner's client context is its own certificate and key, whatever another replica
writes to the shared ``provisioner-client.*`` files meanwhile (every start issues a pair)."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common.pki import DeploymentCA
from services.provisioner.configurator import agents


def test_another_replicas_key_written_meanwhile_does_not_break_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    other = ca.issue_client_cert("fulcrum-provisioner", validity_days=365)
    written = agents.write_private_file

    def interleaved(path: Path, data: bytes, mode: int = 0o600) -> None:
        written(path, data, mode)
        if path.name == "provisioner-client.key":  # the other replica's key lands last
            written(path, other.key_pem)

    monkeypatch.setattr(agents, "write_private_file", interleaved)
    connections = agents.AgentConnections(ca, tmp_path / "ca")
    assert connections is not None
    assert not [p for p in (tmp_path / "ca").iterdir() if p.name.startswith(".provisioner-client")]
