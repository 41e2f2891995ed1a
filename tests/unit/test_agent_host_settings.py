"""FULCRUM_PROVISIONER_AMPHORAE_PER_AGENT_PROCESS: a count >= 1, and above 1 only where agents
can share a process (the process driver on this host alone); anything else refuses the start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.provisioner.settings import ProvisionerSettings

ENV = "FULCRUM_PROVISIONER_AMPHORAE_PER_AGENT_PROCESS"


def test_the_default_is_an_agent_process_per_amphora() -> None:
    assert ProvisionerSettings().amphorae_per_agent_process == 1


def test_a_count_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "32")
    assert ProvisionerSettings().amphorae_per_agent_process == 32


@pytest.mark.parametrize("bad", ["0", "-3", "many", "2.5", ""])
def test_a_count_below_one_or_not_a_whole_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv(ENV, bad)
    with pytest.raises(ValidationError, match="amphorae_per_agent_process"):
        ProvisionerSettings()


@pytest.mark.parametrize("driver", ["netns", "docker"])
def test_agents_sharing_a_process_need_the_process_driver(driver: str) -> None:
    with pytest.raises(ValidationError, match="needs the process driver on this host alone"):
        ProvisionerSettings(driver=driver, amphorae_per_agent_process=2)
    assert ProvisionerSettings(driver=driver, amphorae_per_agent_process=1).driver == driver


def test_agents_sharing_a_process_refuse_amphora_hosts() -> None:
    with pytest.raises(ValidationError, match="needs the process driver on this host alone"):
        ProvisionerSettings(hosts=[{"name": "h1"}], amphorae_per_agent_process=4)
