"""Shared secrets are set once: every service that needs one reads its deployment-wide name,
and still its own older ``FULCRUM_<SVC>_*`` name when that one is unset."""

from __future__ import annotations

import pytest
from pydantic_settings import BaseSettings

from libs.common.settings import HEARTBEAT_KEY_ENV, SECRET_KEYS_ENV
from services.api.settings import ApiSettings
from services.health.settings import HealthSettings
from services.provisioner.settings import ProvisionerSettings

# (settings class, field, deployment-wide name, the service's own older name)
READERS: list[tuple[type[BaseSettings], str, str, str]] = [
    (HealthSettings, "heartbeat_key", HEARTBEAT_KEY_ENV, "FULCRUM_HEALTH_HEARTBEAT_KEY"),
    (ProvisionerSettings, "heartbeat_key", HEARTBEAT_KEY_ENV, "FULCRUM_PROVISIONER_HEARTBEAT_KEY"),
    (ApiSettings, "secret_keys", SECRET_KEYS_ENV, "FULCRUM_API_SECRET_KEYS"),
    (ProvisionerSettings, "secret_keys", SECRET_KEYS_ENV, "FULCRUM_PROVISIONER_SECRET_KEYS"),
]
IDS = [f"{build.__name__}.{field}" for build, field, _, _ in READERS]


@pytest.fixture(autouse=True)
def no_secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, _, shared, own in READERS:
        monkeypatch.delenv(shared, raising=False)
        monkeypatch.delenv(own, raising=False)


# (which of the two names are set, the value read): the deployment-wide name wins.
SETTINGS_OF_A_DEPLOYMENT: list[tuple[frozenset[str], str]] = [
    (frozenset({"shared"}), "shared-value"),
    (frozenset({"own"}), "own-value"),
    (frozenset({"shared", "own"}), "shared-value"),
]


@pytest.mark.parametrize(("build", "field", "shared", "own"), READERS, ids=IDS)
@pytest.mark.parametrize(("names_set", "expected"), SETTINGS_OF_A_DEPLOYMENT)
def test_either_name_sets_it_and_the_shared_one_wins(
    monkeypatch: pytest.MonkeyPatch,
    build: type[BaseSettings],
    field: str,
    shared: str,
    own: str,
    names_set: frozenset[str],
    expected: str,
) -> None:
    for name in names_set:
        monkeypatch.setenv(shared if name == "shared" else own, f"{name}-value")
    assert getattr(build(), field) == expected


def test_code_passes_them_by_field_name() -> None:
    assert HealthSettings(heartbeat_key="k").heartbeat_key == "k"
    assert ApiSettings(secret_keys="s").secret_keys == "s"
    both = ProvisionerSettings(heartbeat_key="k", secret_keys="s")
    assert (both.heartbeat_key, both.secret_keys) == ("k", "s")


def test_unset_means_empty() -> None:
    assert ProvisionerSettings().heartbeat_key == ""
    assert ApiSettings().secret_keys == ""
