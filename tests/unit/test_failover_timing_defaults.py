"""The default heartbeat timing: amphorae beat at the interval the provisioner gives them, and
an amphora that only lost a beat or two is not failed over."""

from __future__ import annotations

from typing import Any

from services.amphora.settings import AmphoraSettings
from services.health.settings import HealthSettings
from services.provisioner.settings import ProvisionerSettings


def default(settings: type[Any], name: str) -> float:
    value = settings.model_fields[name].default
    assert isinstance(value, float)
    return value


def test_the_provisioner_tells_amphorae_the_agents_own_default_interval() -> None:
    assert default(ProvisionerSettings, "heartbeat_interval") == default(
        AmphoraSettings, "heartbeat_interval"
    )


def test_the_timeout_tolerates_two_lost_beats() -> None:
    interval = default(AmphoraSettings, "heartbeat_interval")
    assert default(HealthSettings, "heartbeat_timeout") >= 3 * interval
