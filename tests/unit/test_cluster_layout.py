"""The cluster stack's pure pieces: the API front's HAProxy configuration and the compose
profile of the same topology."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from deploy.local.cluster import HAPROXY, render_front, replica_names, unavailable_response

REPO = Path(__file__).resolve().parents[2]


def test_the_front_checks_every_api_replica_and_haproxy_accepts_it(tmp_path: Path) -> None:
    unavailable = tmp_path / "503.http"
    unavailable.write_text(unavailable_response())
    config = tmp_path / "front.cfg"
    config.write_text(render_front(9999, [1001, 1002], unavailable))
    text = config.read_text()
    assert "bind 127.0.0.1:9999" in text and "option httpchk GET /readyz" in text
    assert "server api-1 127.0.0.1:1001 check" in text
    assert "server api-2 127.0.0.1:1002 check" in text
    assert "server api-2-fallback 127.0.0.1:1002 backup" in text
    checked = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_unavailable_answer_is_a_json_503() -> None:
    head, body = unavailable_response().split("\r\n\r\n", 1)
    assert head.startswith("HTTP/1.1 503") and "application/json" in head
    assert f"Content-Length: {len(body)}" in head
    assert yaml.safe_load(body)["faultcode"] == "Server"


def test_the_compose_profile_has_the_cluster_topology() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    cluster = {name for name, svc in services.items() if "cluster" in svc.get("profiles", [])}
    wanted = {"nats-1", "nats-2", "nats-3", "front"}
    for service in ("api", "provisioner", "health", "housekeeping"):
        wanted |= set(replica_names(service))
    assert cluster == wanted
    for name in wanted - {"front", "nats-1", "nats-2", "nats-3"}:
        env = services[name]["environment"]
        servers = next(v for k, v in env.items() if k.endswith("NATS__SERVERS"))
        assert servers.count("nats://nats-") == 3
    front_needs = set(services["front"]["depends_on"])
    assert front_needs == wanted - {"front", "nats-1", "nats-2", "nats-3"}
    compose_cli = shutil.which("docker-compose")  # Makefile sysdeps installs it
    assert compose_cli is not None, "docker-compose is missing (make sysdeps)"
    checked = subprocess.run(
        [compose_cli, "-f", str(REPO / "deploy" / "compose.yaml"), "--profile", "cluster",
         "config", "-q"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
