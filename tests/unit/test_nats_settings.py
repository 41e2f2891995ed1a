"""NATS connection settings: server lists (and the single ``url`` of old), credentials and TLS,
as settings, as nats-py options, and in a rendered cluster config."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local.nats_cluster import EVENTS_READER, SERVICE_USERS, NatsCluster
from libs.common.bus import connect_options
from libs.common.errors import ConfigurationError
from libs.common.settings import NatsSettings
from services.health.settings import HealthSettings


def test_url_and_comma_separated_servers_are_accepted() -> None:
    assert NatsSettings().servers == ["nats://127.0.0.1:4222"]
    assert NatsSettings(url="nats://a:1").servers == ["nats://a:1"]
    assert NatsSettings(url="nats://a:1, nats://b:2").servers == ["nats://a:1", "nats://b:2"]
    assert NatsSettings(servers=["nats://a:1"], url="nats://b:2").servers == ["nats://a:1"]
    assert NatsSettings(servers="nats://a:1,nats://b:2").url == "nats://a:1,nats://b:2"


def test_servers_and_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULCRUM_HEALTH_NATS__URL", "nats://old:1")
    assert HealthSettings().nats.servers == ["nats://old:1"]
    monkeypatch.setenv("FULCRUM_HEALTH_NATS__SERVERS", "nats://a:1,nats://b:2")
    assert HealthSettings().nats.servers == ["nats://a:1", "nats://b:2"]
    monkeypatch.setenv("FULCRUM_HEALTH_NATS__SERVERS", '["tls://a:1", "tls://c:3"]')
    monkeypatch.setenv("FULCRUM_HEALTH_NATS__USER", "health")
    monkeypatch.setenv("FULCRUM_HEALTH_NATS__PASSWORD", "s3cret")
    nats = HealthSettings().nats
    assert nats.servers == ["tls://a:1", "tls://c:3"]
    assert (nats.user, nats.password, nats.tls) == ("health", "s3cret", True)
    assert "s3cret" not in repr(nats)


@pytest.mark.parametrize(
    "fields",
    [
        {"user": "u", "password": "p", "token": "t"},
        {"token": "t", "creds_file": "/x.creds"},
        {"user": "u"},
        {"password": "p"},
        {"tls_cert_file": "/c.pem"},
        {"servers": []},
    ],
)
def test_contradictory_settings_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        NatsSettings(**fields)


def test_connect_options() -> None:
    plain = connect_options(NatsSettings(url="nats://a:1,nats://b:2"))
    assert plain == {"servers": ["nats://a:1", "nats://b:2"]}
    options = connect_options(NatsSettings(url="nats://a:1", user="u", password="p"))
    assert (options["user"], options["password"]) == ("u", "p")
    assert connect_options(NatsSettings(token="t"))["token"] == "t"
    assert connect_options(NatsSettings(creds_file="/x.creds"))["user_credentials"] == "/x.creds"
    assert connect_options(NatsSettings(url="tls://a:1"))["tls"] is not None
    with pytest.raises(ConfigurationError):
        connect_options(NatsSettings(tls_ca_file="/nonexistent/ca.pem"))


def test_cluster_config_routes_to_the_others_and_one_user_per_service(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path, size=3)
    ports = {p for node in cluster.nodes for p in vars(node.ports).values()}
    assert len(ports) == 9, "every port distinct"
    first = cluster.nodes[0]
    config = cluster.render_config(first)
    assert f'server_name: "{first.name}"' in config
    assert f':{first.ports.cluster}"' not in config.split("routes:")[1]
    for other in cluster.nodes[1:]:
        assert f'@127.0.0.1:{other.ports.cluster}"' in config
    for user in (*SERVICE_USERS, EVENTS_READER):
        password = cluster.credentials_for(user).password
        assert f'{{ user: "{user}", password: "{password}"' in config
        assert (tmp_path / "credentials" / f"{user}.password").stat().st_mode & 0o777 == 0o600
    assert cluster.settings_for("api").replicas == 3
    env = cluster.environment_for("provisioner")
    assert env["NATS__SERVERS"] == ",".join(cluster.urls)
    assert env["NATS__USER"] == "provisioner"
    again = NatsCluster(tmp_path, size=3)
    assert again.urls == cluster.urls, "ports kept across instances"
    assert again.credentials_for("api") == cluster.credentials_for("api")
    programs = again.programs(tmp_path / "logs")
    assert [p.name for p in programs] == ["nats-1", "nats-2", "nats-3"]
    assert programs[0].command[-2:] == ["-c", str(first.config_path)]
    assert first.config_path.stat().st_mode & 0o777 == 0o600
