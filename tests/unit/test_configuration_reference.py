"""docs/configuration.md and ``fulcrum <service> --help``: every setting of every service, with
its variable, type, default and description, generated from the settings classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local.cli import main
from deploy.local.configuration import SERVICE_SETTINGS, render_configuration, settings_class
from libs.common.settings_reference import setting_docs

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_md_is_in_sync_with_the_settings() -> None:
    assert DOC.read_text() == render_configuration(), (
        "run: fulcrum config docs > docs/configuration.md"
    )


@pytest.mark.parametrize("service", list(SERVICE_SETTINGS))
def test_every_setting_is_described(service: str) -> None:
    docs = setting_docs(settings_class(service))
    assert len(docs) >= 20
    assert [d.env for d in docs if not d.description] == []
    assert len({d.env for d in docs}) == len(docs)


def test_nested_shared_and_required_settings_are_named_as_read() -> None:
    api = {d.env: d for d in setting_docs(settings_class("api"))}
    assert api["FULCRUM_API_POSTGRES__DSN"].type == "string"
    assert api["FULCRUM_API_QUOTA__LOADBALANCER"].default == "-1"
    assert api["FULCRUM_API_RESERVED_IPS"].default == '["169.254.169.254"]'
    assert api["FULCRUM_SECRET_KEYS (or FULCRUM_API_SECRET_KEYS)"].default == '""'
    assert (
        api["FULCRUM_API_LOADBALANCER_TOPOLOGY"].type
        == "one of SINGLE, ACTIVE_STANDBY, ACTIVE_ACTIVE"
    )
    provisioner = {d.env: d for d in setting_docs(settings_class("provisioner"))}
    # A nested model's fields default to the values of the model's default instance.
    assert provisioner["FULCRUM_PROVISIONER_DOCKER__MGMT_NETWORK__NAME"].default == (
        '"fulcrum-lb-mgmt"'
    )
    assert provisioner["FULCRUM_PROVISIONER_DOCKER__HOST"].type == "string (optional)"
    amphora = {d.env: d for d in setting_docs(settings_class("amphora"))}
    assert amphora["FULCRUM_AMPHORA_STATE_DIR"].default == "(required)"
    # Defaults found where the service runs are described, not this machine's value.
    assert (
        amphora["FULCRUM_AMPHORA_HAPROXY_BIN"].default == "haproxy on PATH, else /usr/sbin/haproxy."
    )


@pytest.mark.parametrize("service", ["api", "provisioner", "health", "housekeeping"])
def test_service_help_lists_every_setting(service: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([service, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: fulcrum {service}")
    for doc in setting_docs(settings_class(service)):
        assert f"  {doc.env}  ({doc.type}; default {doc.default})\n      {doc.description}" in out


def test_config_docs_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "docs"]) == 0
    assert capsys.readouterr().out == render_configuration()
