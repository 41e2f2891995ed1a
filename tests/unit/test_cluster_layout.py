"""The cluster stack's pure pieces: the API front's HAProxy configuration, the compose
profile of the same topology and its Patroni/etcd configurations."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from deploy.local.cluster import (
    HAPROXY,
    front_certificate,
    render_front,
    replica_names,
    unavailable_response,
)
from deploy.local.patroni import PatroniCluster, PatroniPorts, render_for_compose

REPO = Path(__file__).resolve().parents[2]


def test_the_front_checks_every_api_replica_and_haproxy_accepts_it(tmp_path: Path) -> None:
    unavailable = tmp_path / "503.http"
    unavailable.write_text(unavailable_response())
    config = tmp_path / "front.cfg"
    certificate = front_certificate(tmp_path)
    config.write_text(
        render_front(9999, 9998, [1001, 1002], [2001, 2002], unavailable, certificate)
    )
    text = config.read_text()
    assert f"bind 127.0.0.1:9999 ssl crt {certificate}\n    option forwardfor" in text
    assert "option httpchk GET /readyz" in text
    assert "server api-1 127.0.0.1:1001 check port 2001" in text  # the operator listener
    assert "server api-2 127.0.0.1:1002 check port 2002" in text
    assert "server api-2-fallback 127.0.0.1:1002 backup" in text
    assert "bind 127.0.0.1:9998\n    monitor-uri /readyz" in text
    checked = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_unavailable_answer_is_a_json_503() -> None:
    head, body = unavailable_response().split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 503") and "application/json" in head
    assert f"Content-Length: {len(body)}" in head
    assert yaml.safe_load(body)["faultcode"] == "Server"


def service_of(replica: str) -> str:
    """``api`` of ``api-1``."""
    return replica.rsplit("-", 1)[0]


def test_the_compose_profile_has_the_cluster_topology() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    cluster = {name for name, svc in services.items() if "cluster" in svc.get("profiles", [])}
    infrastructure = {"nats-1", "nats-2", "nats-3", "etcd", "pg0", "pg1"}
    replicas: set[str] = set()
    for service in ("api", "provisioner", "health", "housekeeping"):
        replicas |= set(replica_names(service))
    assert cluster == infrastructure | replicas | {"front", "migrate-cluster"}
    for name in replicas:
        env = services[name]["environment"]
        servers = next(v for k, v in env.items() if k.endswith("NATS__SERVERS"))
        assert servers.count("tls://nats-") == 3
        dsn = next(v for k, v in env.items() if k.endswith("POSTGRES__DSN"))
        assert dsn.startswith(f"postgresql://fulcrum_{service_of(name)}@pg0:5432,pg1:5432/")
        assert dsn.endswith("?target_session_attrs=read-write")
        needs = services[name]["depends_on"]
        assert "postgres" not in needs
        assert needs["migrate-cluster"] == {"condition": "service_completed_successfully"}
    migrate_needs = services["migrate-cluster"]["depends_on"]
    assert all(migrate_needs[m] == {"condition": "service_healthy"} for m in ("pg0", "pg1"))
    for member in ("pg0", "pg1"):
        svc = services[member]
        assert svc["command"] == ["patroni", member]
        assert svc["depends_on"]["etcd"] == {"condition": "service_healthy"}
        assert svc["healthcheck"]["test"][-1] == "http://127.0.0.1:8008/health"
    assert services["etcd"]["command"] == ["etcd"]
    front_needs = set(services["front"]["depends_on"])
    assert front_needs == replicas
    compose_cli = shutil.which("docker-compose")  # Makefile sysdeps installs it
    assert compose_cli is not None, "docker-compose is missing (make sysdeps)"
    checked = subprocess.run(
        [compose_cli, "-f", str(REPO / "deploy" / "compose.yaml"), "--profile", "cluster",
         "config", "-q"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_the_compose_patroni_configs_are_the_local_ones_but_for_addresses(tmp_path: Path) -> None:
    for secret in ("postgres.password", "replication.password", "patroni-api.password"):
        (tmp_path / secret).write_text(f"{secret}-value\n")
    local = PatroniCluster(tmp_path, PatroniPorts(1, 2, (3, 4), (5, 6))).patroni_config("pg1")
    member = yaml.safe_load(render_for_compose(tmp_path, "pg1").read_text())
    assert member["bootstrap"] == local["bootstrap"]
    assert member["postgresql"]["authentication"] == local["postgresql"]["authentication"]
    assert member["postgresql"]["authentication"]["superuser"]["password"] == (
        "postgres.password-value"
    )
    assert member["postgresql"]["listen"] == "0.0.0.0:5432"
    assert member["postgresql"]["connect_address"] == "pg1:5432"
    assert member["restapi"]["connect_address"] == "pg1:8008"
    assert member["etcd3"]["hosts"] == ["etcd:2379"]
    assert all(rule.endswith(" samenet scram-sha-256") for rule in member["postgresql"]["pg_hba"])
    etcd = yaml.safe_load(render_for_compose(tmp_path, "etcd").read_text())
    assert etcd["advertise-client-urls"] == "http://etcd:2379"
    assert etcd["initial-cluster"] == "etcd0=http://etcd:2380"
    assert etcd["listen-client-urls"] == "http://0.0.0.0:2379"
