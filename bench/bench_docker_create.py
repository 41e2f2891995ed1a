"""Docker driver benchmark: POST a load balancer -> ACTIVE, with amphorae as containers.

Runs the stack of deploy/compose.yaml (project ``fulcrum-bench``) on the private dockerd of
``.state/docker`` (started and stopped here unless it already runs; FULCRUM_BENCH_DOCKER_HOST
for another engine), with the images of deploy/images.py. Each round POSTs an LB with an HTTP
listener, a pool and two members (backend containers on the VIP network) to the Octavia API and
polls it every 10 ms until ACTIVE, checks that the VIP serves, then deletes it. Two stacks:

- cold: FULCRUM_SPARE_POOL_SIZE=0, every create boots a container. For the breakdown, the same
  engine's ``DockerAmphoraDriver.ensure`` alone (container create + start + agent listening)
  is timed in this process too.
- default: compose.yaml's own spare pool (FULCRUM_SPARE_POOL_SIZE unset: 2, as ``make up``);
  each round waits for a READY spare, which the create claims instead of starting a container.

Prints p50/p90/min/max of each.
Goal on this 2-core box: p50 <= 1.5 s (Octavia with VMs: minutes).
Run: .venv/bin/python bench/bench_docker_create.py [rounds]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deploy.local.dockerd import PrivateDockerd  # noqa: E402
from libs.common.pki import DeploymentCA  # noqa: E402
from services.provisioner.drivers import AmphoraSpec  # noqa: E402
from services.provisioner.drivers.docker import DockerAmphoraDriver  # noqa: E402
from services.provisioner.settings import DockerDriverSettings  # noqa: E402

PROJECT = "fulcrum-bench"
SUBNET_ID = "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"
GOAL = 1.5
# Driver-only rounds use VIPs outside the API's pool (.10-.120) and docker's range (.128/25).
DRIVER_VIPS = [f"198.18.64.{n}" for n in range(121, 128)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(api: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{api}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            print(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}")
        raise
    return json.loads(text) if text else None


def wait_http(url: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return str(answer.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
    return (
        f"{name}: n={len(samples)} p50={statistics.median(samples):.2f} s p90={p90:.2f} s "
        f"min={ordered[0]:.2f} s max={ordered[-1]:.2f} s"
    )


@contextlib.contextmanager
def engine() -> Iterator[str]:
    external = os.environ.get("FULCRUM_BENCH_DOCKER_HOST")
    if external:
        yield external
        return
    dockerd = PrivateDockerd(REPO / ".state" / "docker", die_with_parent=True)
    url = dockerd.start()
    try:
        yield url
    finally:
        if dockerd.started:
            dockerd.stop()


@contextlib.contextmanager
def compose_stack(docker_host: str, spares: int | None) -> Iterator[str]:
    """The stack with ``spares`` spare amphorae; None: compose.yaml's default pool."""
    port = free_port()
    env = {
        **os.environ,
        "DOCKER_HOST": docker_host,
        "FULCRUM_API_PORT": str(port),
        "COMPOSE_PROJECT_NAME": PROJECT,
        # The bench measures provisioning, not identity: authentication off, by choice.
        "FULCRUM_API_AUTH_STRATEGY": "noauth",
    }
    env.pop("FULCRUM_SPARE_POOL_SIZE", None)
    if spares is not None:
        env["FULCRUM_SPARE_POOL_SIZE"] = str(spares)
    if docker_host.startswith("unix://"):
        env["FULCRUM_DOCKER_SOCKET"] = docker_host.removeprefix("unix://")
    compose = [shutil.which("docker-compose") or "docker-compose", "-f", "deploy/compose.yaml"]
    subprocess.run([*compose, "up", "-d"], cwd=REPO, env=env, check=True, capture_output=True)
    api = f"https://127.0.0.1:{port}"
    try:
        # The API speaks HTTPS with a certificate of the deployment CA in the secrets volume.
        ca = subprocess.run(
            [*compose, "exec", "-T", "api", "cat", "/var/lib/fulcrum/secrets/ca/ca.pem"],
            cwd=REPO, env=env, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        trust = ssl.create_default_context(cadata=ca)
        urllib.request.install_opener(
            urllib.request.build_opener(urllib.request.HTTPSHandler(context=trust))
        )
        wait_http(f"{api}/", 120)
        yield api
    finally:
        client = docker.DockerClient(base_url=docker_host, version="auto")
        for container in client.containers.list(
            all=True, filters={"label": "fulcrum.deployment=fulcrum"}
        ):
            container.remove(force=True)
        client.close()
        subprocess.run(
            [*compose, "down", "-v", "--remove-orphans"], cwd=REPO, env=env, capture_output=True
        )


@contextlib.contextmanager
def backends(client: docker.DockerClient) -> Iterator[list[str]]:
    started = []
    try:
        for name in ("be0", "be1"):
            command = (
                f"mkdir -p /srv && printf {name} > /srv/index.html && cd /srv && "
                "exec python3 -m http.server 8000"
            )
            container = client.containers.run(
                "fulcrum/amphora:latest",
                entrypoint=["sh", "-c", command],
                network="fulcrum-vip",
                detach=True,
                labels={"fulcrum.bench": "backend"},
            )
            started.append(container)
            container.reload()
        addresses = [
            c.attrs["NetworkSettings"]["Networks"]["fulcrum-vip"]["IPAddress"] for c in started
        ]
        for address in addresses:
            wait_http(f"http://{address}:8000/", 20)
        yield addresses
    finally:
        for container in started:
            container.remove(force=True)


def wait_for_spare(api: str, timeout: float = 120) -> None:
    """Until the API lists a READY (spare) amphora."""
    deadline = time.monotonic() + timeout
    while True:
        amphorae = call(api, "GET", "/v2/octavia/amphorae?status=READY")["amphorae"]
        if any(a["status"] == "READY" for a in amphorae):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("no spare amphora became READY")
        time.sleep(0.1)


def create_rounds(api: str, members: list[str], rounds: int, spares: bool = False) -> list[float]:
    samples = []
    for _ in range(rounds):
        if spares:
            wait_for_spare(api)
        body = {
            "loadbalancer": {
                "name": "bench",
                "vip_subnet_id": SUBNET_ID,
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "protocol_port": 80,
                        "default_pool": {
                            "name": "web",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                            "members": [{"address": a, "protocol_port": 8000} for a in members],
                        },
                    }
                ],
            }
        }
        started = time.monotonic()
        lb = call(api, "POST", "/v2/lbaas/loadbalancers", body)["loadbalancer"]
        while True:
            status = call(api, "GET", f"/v2/lbaas/loadbalancers/{lb['id']}")["loadbalancer"]
            if status["provisioning_status"] == "ACTIVE":
                break
            if status["provisioning_status"] == "ERROR" or time.monotonic() - started > 60:
                raise RuntimeError(f"LB {lb['id']}: {status['provisioning_status']}")
            time.sleep(0.01)
        samples.append(time.monotonic() - started)
        assert wait_http(f"http://{lb['vip_address']}/", 5) in ("be0", "be1")
        call(api, "DELETE", f"/v2/lbaas/loadbalancers/{lb['id']}?cascade=true")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                call(api, "GET", f"/v2/lbaas/loadbalancers/{lb['id']}")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    break
            time.sleep(0.05)
    return samples


async def driver_rounds(docker_host: str, rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        ca = DeploymentCA.load_or_create(Path(tmp) / "ca")
        settings = DockerDriverSettings(host=docker_host, deployment="fulcrum-bench-driver")
        driver = DockerAmphoraDriver(settings, ca)
        samples = []
        try:
            for i in range(rounds):
                spec = AmphoraSpec(
                    str(uuid.uuid4()), str(uuid.uuid4()), DRIVER_VIPS[i % len(DRIVER_VIPS)]
                )
                started = time.monotonic()
                await driver.ensure(spec)
                samples.append(time.monotonic() - started)
                await driver.delete(spec.amphora_id)
        finally:
            for handle in await driver.list():
                await driver.delete(handle.amphora_id)
            await driver.close()
    return samples


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with engine() as docker_host:
        subprocess.run(
            [sys.executable, str(REPO / "deploy" / "images.py"), "--docker-host", docker_host],
            check=True,
        )
        client = docker.DockerClient(base_url=docker_host, version="auto")
        try:
            with compose_stack(docker_host, spares=0) as api, backends(client) as members:
                create_rounds(api, members, 2)  # warm-up: first amphora, caches
                api_samples = create_rounds(api, members, rounds)
                driver_samples = asyncio.run(driver_rounds(docker_host, rounds))
            with compose_stack(docker_host, spares=None) as api, backends(client) as members:
                create_rounds(api, members, 2, spares=True)
                spare_samples = create_rounds(api, members, rounds, spares=True)
        finally:
            client.close()
    print(summary("cold (spare pool 0): POST LB -> ACTIVE, booting a container", api_samples))
    print(summary("  of which driver.ensure alone (container + agent up)", driver_samples))
    print(
        summary("default (compose spare pool): POST LB -> ACTIVE, claiming a spare", spare_samples)
    )
    for what, samples in (("cold", api_samples), ("default spare pool", spare_samples)):
        p50 = statistics.median(samples)
        verdict = "met" if p50 <= GOAL else "NOT met"
        print(f"goal p50 <= {GOAL} s {what}: {verdict} ({p50:.2f} s)")
    print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
