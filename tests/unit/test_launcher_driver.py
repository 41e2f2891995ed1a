"""``fulcrum up`` tells the API which amphora driver the provisioner runs, so the API refuses
what that driver cannot honour (deploy/local/environment.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local.environment import ServiceAddresses, service_environment
from deploy.local.ports import StackPorts


def _api_driver(tmp_path: Path) -> str:
    ports = StackPorts(
        api=9876,
        postgres=1,
        nats=2,
        nats_monitor=3,
        provisioner=4,
        health=5,
        housekeeping=6,
        health_udp=7,
    )
    env = service_environment(
        tmp_path, lambda _service: "postgresql://x", lambda _service: {}, ServiceAddresses.of(ports)
    )
    return env["api"]["FULCRUM_API_AMPHORA_DRIVER"]


@pytest.mark.parametrize(
    ("environment", "driver"),
    [
        ({}, "process"),
        ({"FULCRUM_PROVISIONER_DRIVER": "netns"}, "netns"),
        ({"FULCRUM_PROVISIONER_HOSTS": '[{"name": "h1"}]'}, "netns"),
        ({"FULCRUM_PROVISIONER_HOSTS": "[]"}, "process"),
    ],
)
def test_the_api_learns_the_provisioners_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], driver: str
) -> None:
    monkeypatch.delenv("FULCRUM_PROVISIONER_DRIVER", raising=False)
    monkeypatch.delenv("FULCRUM_PROVISIONER_HOSTS", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert _api_driver(tmp_path) == driver
