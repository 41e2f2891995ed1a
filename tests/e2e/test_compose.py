"""The whole stack from deploy/compose.yaml on a real docker engine, driven as a user does.

compose up (images built by deploy/images.py); create an LB, a listener, a pool and two members
with the real `openstack` CLI (Keystone password auth as the bootstrap admin, whose password
`init` made in the secrets volume: compose's API runs Keystone auth by default); wait for ACTIVE
(compose's default spare pool: the LB claims a booted spare);
send HTTP from the host through the VIP to two backend containers; kill the amphora's
container and see the health service and the provisioner replace it; delete the LB; compose
down: nothing of the stack is left on the engine. The profile `cluster` (`up -d front`): Patroni
has a leader and a streaming synchronous standby, an LB goes ACTIVE through the front, and after a
`docker kill` of the leader's container the standby is promoted and the API accepts writes again.
In both, the published port speaks HTTPS only, with the certificate `init` issued from the
deployment CA (the CLI and every request trust that CA, copied from the secrets volume; the
cluster front re-encrypts to the replicas), and `/healthz`, `/readyz` and `/metrics` answer
404 there (the API's operator port, inside the control network, serves them).

The engine is the private dockerd of `.state/docker` (or FULCRUM_TEST_DOCKER_HOST); when none
can be started the test fails and says why. The stack's networks have fixed names
(fulcrum-vip, fulcrum-lb-mgmt), so a stack of `make compose-up` must not run on the same
engine at the same time. Their subnets are reserved on the host for the test (FULCRUM_VIP_NET,
FULCRUM_MGMT_NET), so runs in other checkouts, on other engines, never share them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from deploy.local.dockerd import reserved_subnets
from services.provisioner.drivers.docker import LABEL_DEPLOYMENT, container_name
from tests.integration.docker import engine
from tests.integration.docker.conftest import backend_containers, wait_http

pytestmark = pytest.mark.docker

docker_host = engine.docker_host
docker_images = engine.docker_images
docker_client = engine.docker_client

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "deploy" / "compose.yaml"
PROJECT = "fulcrum-e2e"
STACK_NETWORKS = ("fulcrum-vip", "fulcrum-lb-mgmt")
# Where the stack's VIP and management /24s are taken from (not compose's defaults, .64/.65).
SUBNET_CANDIDATES = [f"198.18.{n}.0/24" for n in range(128, 192)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    api: str
    compose: list[str]
    env: dict[str, str]
    # Where the deployment CA (from the secrets volume) is copied to, to trust the API's HTTPS.
    ca_file: Path
    # A service holding the secrets volume, to read the bootstrap admin's password from.
    api_service: str = "api"
    _token: str = field(default="", repr=False)

    def copy_ca(self) -> None:
        """The deployment CA of the secrets volume into ``ca_file`` (once ``init`` ran)."""
        path = "/var/lib/fulcrum/secrets/ca/ca.pem"
        self.ca_file.write_text(self.run("exec", "-T", self.api_service, "cat", path))

    def trust(self) -> ssl.SSLContext:
        """A client context trusting the deployment CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def admin_password(self) -> str:
        path = "/var/lib/fulcrum/secrets/admin.password"
        return self.run("exec", "-T", self.api_service, "cat", path).strip()

    def token(self) -> str:
        """A Keystone token of the bootstrap admin (issued once)."""
        if not self._token:
            password = self.admin_password()
            user = {"name": "admin", "domain": {"name": "Default"}, "password": password}
            body = {
                "auth": {
                    "identity": {"methods": ["password"], "password": {"user": user}},
                    "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
                }
            }
            request = urllib.request.Request(
                f"{self.api}/v3/auth/tokens",
                method="POST",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10, context=self.trust()) as answer:
                self._token = answer.headers["X-Subject-Token"]
        return self._token

    def run(self, *args: str, timeout: float = 180) -> str:
        result = subprocess.run(
            [*self.compose, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def logs(self) -> str:
        with contextlib.suppress(Exception):
            return self.run("logs", "--no-color", "--tail=40", timeout=60)
        return "(no logs)"

    def cli(self, *args: str, output: bool = True) -> dict[str, Any]:
        """Run the real `openstack` CLI against the stack's API; its JSON output (if any)."""
        openstack = Path(sys.executable).parent / "openstack"
        if not openstack.exists():
            pytest.fail(f"{openstack} is missing (pip install -e '.[test]')", pytrace=False)
        env = {
            **os.environ,
            "OS_AUTH_TYPE": "password",
            "OS_AUTH_URL": f"{self.api}/v3",
            "OS_CACERT": str(self.ca_file),
            "OS_USERNAME": "admin",
            "OS_PASSWORD": self.admin_password(),
            "OS_PROJECT_NAME": "admin",
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_IDENTITY_API_VERSION": "3",
            "OS_REGION_NAME": "RegionOne",
            "OS_INTERFACE": "public",
            "PYTHONWARNINGS": "ignore",
        }
        for _ in range(5):
            result = subprocess.run(
                [str(openstack), *args, *(["-f", "json"] if output else [])],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            # 409 immutable: the LB is busy (e.g. a failover); as a user, wait and retry.
            if result.returncode == 0 or "immutable" not in result.stderr:
                break
            time.sleep(2)
        if result.returncode != 0:
            raise AssertionError(f"openstack {' '.join(args)}: {result.stderr}\n{self.logs()}")
        parsed: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
        return parsed

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.api}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "X-Auth-Token": self.token()},
        )
        with urllib.request.urlopen(request, timeout=10, context=self.trust()) as answer:
            text = answer.read()
        return json.loads(text) if text else None


def compose_command() -> list[str]:
    found = shutil.which("docker-compose")
    if found is not None:
        return [found]
    docker_cli = shutil.which("docker")
    if docker_cli is not None:
        probe = subprocess.run([docker_cli, "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return [docker_cli, "compose"]
    pytest.fail("neither docker-compose nor `docker compose` is installed", pytrace=False)


def leftovers(client: docker.DockerClient) -> list[str]:
    """What of the stack (its containers, amphorae, networks, volumes) is still on the engine."""
    found = [
        c.name
        for label in (f"com.docker.compose.project={PROJECT}", f"{LABEL_DEPLOYMENT}=fulcrum")
        for c in client.containers.list(all=True, filters={"label": label})
    ]
    networks = (*STACK_NETWORKS, f"{PROJECT}_control")
    found += [n.name for n in client.networks.list() if n.name in networks]
    found += [v.name for v in client.volumes.list() if v.name.startswith(f"{PROJECT}_")]
    return found


@pytest.fixture
def stack(
    docker_host: str,
    docker_images: list[str],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> Iterator[Stack]:
    """`compose up` of deploy/compose.yaml; `compose down -v` and a leftover check after."""
    yield from _compose_stack(docker_host, docker_client, tmp_path)


@pytest.fixture
def cluster_stack(
    docker_host: str,
    docker_images: list[str],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> Iterator[Stack]:
    """The profile `cluster` started by naming its front, as docs/deployment.md does."""
    yield from _compose_stack(
        docker_host, docker_client, tmp_path, "--profile", "cluster", up=("front",)
    )


def _compose_stack(
    docker_host: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    *options: str,
    up: tuple[str, ...] = (),
) -> Iterator[Stack]:
    busy = [n.name for n in docker_client.networks.list() if n.name in STACK_NETWORKS]
    if busy:
        pytest.fail(
            f"networks {busy} exist: another Fulcrum stack runs on this engine (make compose-down)",
            pytrace=False,
        )
    with reserved_subnets(SUBNET_CANDIDATES, 2) as (vip_subnet, mgmt_subnet):
        port = free_port()
        env = {
            **os.environ,
            "DOCKER_HOST": docker_host,
            "FULCRUM_API_PORT": str(port),
            "COMPOSE_PROJECT_NAME": PROJECT,
            "FULCRUM_VIP_NET": vip_subnet.rsplit(".", 1)[0],
            "FULCRUM_MGMT_NET": mgmt_subnet.rsplit(".", 1)[0],
        }
        if docker_host.startswith("unix://"):
            env["FULCRUM_DOCKER_SOCKET"] = docker_host.removeprefix("unix://")
        compose = [*compose_command(), "-f", str(COMPOSE_FILE), *options]
        running = Stack(
            f"https://127.0.0.1:{port}", compose, env, tmp_path / "ca.pem", "api-1" if up else "api"
        )
        yield from _stack_up_down(running, docker_client, up)
    assert leftovers(docker_client) == []


def _stack_up_down(
    running: Stack, docker_client: docker.DockerClient, services: tuple[str, ...] = ()
) -> Iterator[Stack]:
    """`compose up` (of ``services``, default all), the stack, then (also after a failure)
    amphorae removed and `down -v`."""
    try:
        started = time.monotonic()
        try:
            running.run("up", "-d", *services)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{running.logs()}") from exc
        try:
            running.copy_ca()
            wait_https(f"{running.api}/", running.trust(), 120)
        except (OSError, AssertionError) as exc:
            raise AssertionError(f"API not up: {exc}\n{running.logs()}") from exc
        print(f"compose up until the API answers: {time.monotonic() - started:.1f} s")
        yield running
    finally:
        # Stopped first, the services boot no more amphorae (spares) while the rest goes.
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            running.run("stop", "-t", "10")
        # Amphorae are the provisioner's, not compose's: remove any the test left behind.
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_DEPLOYMENT}=fulcrum"}
        ):
            container.remove(force=True)
        started = time.monotonic()
        running.run("down", "-v", "--remove-orphans")
        print(f"compose down: {time.monotonic() - started:.1f} s")


def wait_https(url: str, trust: ssl.SSLContext, timeout: float) -> None:
    """Until ``url`` answers over HTTPS with a certificate ``trust`` verifies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=trust):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def assert_https_only(stack: Stack) -> None:
    """The published port speaks HTTPS only, with a certificate of the deployment CA: a client
    that does not trust that CA is refused, plain HTTP gets no answer."""
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{stack.api}/", timeout=10)
    plain = stack.api.replace("https://", "http://", 1)
    with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
        urllib.request.urlopen(f"{plain}/", timeout=10)


def wait_lb(stack: Stack, lb_id: str, wanted: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        lb: dict[str, Any] = stack.call("GET", f"/v2/lbaas/loadbalancers/{lb_id}")["loadbalancer"]
        if lb["provisioning_status"] == wanted:
            return lb
        if time.monotonic() > deadline:
            raise AssertionError(f"LB {lb['provisioning_status']}, wanted {wanted}\n{stack.logs()}")
        time.sleep(0.1)


def names(url: str, count: int) -> Counter[str]:
    return Counter(wait_http(url, 5) for _ in range(count))


def amphora_containers(stack: Stack, client: docker.DockerClient, lb_id: str) -> list[Any]:
    """Running containers of the LB's amphorae as the API lists them (the stack keeps spares,
    and a claimed spare's container has no LB label)."""
    listed = stack.call("GET", f"/v2/octavia/amphorae?loadbalancer_id={lb_id}")["amphorae"]
    names = {container_name(a["id"]) for a in listed if a["status"] != "DELETED"}
    return [c for c in client.containers.list() if c.name in names]


def existing(client: docker.DockerClient, ids: set[str]) -> set[str]:
    """Those of ``ids`` whose containers exist (running or not)."""
    found = client.containers.list(all=True, filters={"label": f"{LABEL_DEPLOYMENT}=fulcrum"})
    return ids & {c.id for c in found}


def test_compose_stack_serves_and_replaces_a_killed_amphora(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    with backend_containers(["web0", "web1"], "fulcrum-vip") as backends:
        # The real `openstack` CLI, unmodified (Keystone password auth).
        started = time.monotonic()
        lb = stack.cli(
            "loadbalancer", "create", "--name", "e2e", "--vip-subnet", "public-subnet", "--wait"
        )
        lb_id, vip = lb["id"], lb["vip_address"]
        stack.cli(
            "loadbalancer", "listener", "create", "--name", "http", "--protocol", "HTTP",
            "--protocol-port", "80", "--wait", "e2e",
        )  # fmt: skip
        stack.cli(
            "loadbalancer", "pool", "create", "--name", "web", "--listener", "http",
            "--protocol", "HTTP", "--lb-algorithm", "ROUND_ROBIN", "--wait",
        )  # fmt: skip
        for backend in backends:
            stack.cli(
                "loadbalancer", "member", "create", "--address", backend.address,
                "--protocol-port", str(backend.port), "--wait", "web",
            )  # fmt: skip
        wait_lb(stack, lb_id, "ACTIVE")
        print(f"LB, listener, pool, 2 members with the CLI: {time.monotonic() - started:.1f} s")
        url = f"http://{vip}/"
        assert names(url, 10) == Counter({"web0": 5, "web1": 5})

        # Kill the amphora: health misses its heartbeats, the provisioner builds a new one.
        (first,) = amphora_containers(stack, docker_client, lb_id)
        first.kill()
        killed = time.monotonic()
        deadline = killed + 90
        while True:
            current = amphora_containers(stack, docker_client, lb_id)
            if current and current[0].id != first.id:
                with contextlib.suppress(OSError):
                    if wait_http(url, 1) in ("web0", "web1"):
                        break
            assert time.monotonic() < deadline, f"no replacement\n{stack.logs()}"
            time.sleep(0.2)
        print(f"killed amphora replaced, serving again after {time.monotonic() - killed:.1f} s")
        wait_lb(stack, lb_id, "ACTIVE")
        assert names(url, 10) == Counter({"web0": 5, "web1": 5})
        served = {first.id} | {c.id for c in amphora_containers(stack, docker_client, lb_id)}

        stack.cli("loadbalancer", "delete", "--cascade", "--wait", lb_id, output=False)
        deadline = time.monotonic() + 60
        while existing(docker_client, served):
            assert time.monotonic() < deadline, f"amphorae not deleted\n{stack.logs()}"
            time.sleep(0.2)
        assert lb_gone(stack, lb_id, 30)
    assert_least_privilege(docker_client)
    assert_operator_endpoints_off_the_tenant_port(stack, docker_client)
    assert_https_only(stack)


# PID 1 of a container (the service, exec'd by the entrypoint): its uid, its groups, and
# whether the engine socket is there.
_PRIVILEGES = """
import json, os
status = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines())
print(json.dumps({"uid": status["Uid"].split()[0], "groups": status["Groups"].split(),
                  "socket": os.path.exists("/var/run/docker.sock")}))
"""


# Each service's uid (deploy/bin/fulcrum-entrypoint, service_uid).
SERVICE_UIDS = {
    "api": "10011",
    "provisioner": "10012",
    "health": "10013",
    "housekeeping": "10014",
    "nats": "10015",
}
# The files of the secrets volume a process of the container's uid can read.
_READABLE_SECRETS = """
import json, os
root = "/var/lib/fulcrum/secrets"
print(json.dumps(sorted(
    os.path.relpath(os.path.join(folder, name), root)
    for folder, _, names in os.walk(root) for name in names
    if os.access(os.path.join(folder, name), os.R_OK))))
"""
# Secrets no service process may read (the entrypoint, as root, hands each service its own
# through its environment): passwords, token and sealing keys, the heartbeat key.
ROOT_ONLY = (".password", "token.keys", "secret.keys", "heartbeat.key")


def assert_least_privilege(client: docker.DockerClient) -> None:
    """Every service and NATS run as a uid of their own, not root; only the provisioner has the
    engine socket (and its group); Postgres runs as 65534. In the secrets volume each reads
    only the certificates and what its own process opens: the CA key the provisioner only
    (it issues the amphorae's certificates), the API's key the API only, NATS' key NATS only,
    no password or key of another."""
    seen = {}
    for service in ("api", "provisioner", "health", "housekeeping", "nats", "postgres"):
        seen[service] = json.loads(in_container(service_container(client, service), _PRIVILEGES))
    for service, uid in SERVICE_UIDS.items():
        assert seen[service]["uid"] == uid, seen
        assert seen[service]["socket"] == (service == "provisioner"), seen
    assert seen["provisioner"]["groups"], "the engine socket's group"
    for service in ("api", "health", "housekeeping", "nats"):
        assert seen[service]["groups"] == [], seen
    assert seen["postgres"]["uid"] == "65534", seen
    readable = {
        service: set(
            json.loads(in_container(service_container(client, service), _READABLE_SECRETS, uid))
        )
        for service, uid in SERVICE_UIDS.items()
    }
    for service, files in readable.items():
        assert "ca/ca.pem" in files, (service, files)
        assert ("ca/ca.key" in files) == (service == "provisioner"), (service, files)
        assert ("api/api.key" in files) == (service == "api"), (service, files)
        assert ("nats-tls/server.key" in files) == (service == "nats"), (service, files)
        assert not [f for f in files if f.endswith(ROOT_ONLY)], (service, files)


# The API's operator listener, asked from inside its container (the port is not published).
_OPERATOR_ENDPOINTS = """
import json, urllib.request
answers = {}
for path in ("/healthz", "/readyz", "/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:9880" + path, timeout=5) as answer:
        answers[path] = answer.status
        if path == "/metrics":
            answers["api metrics"] = "fulcrum_api_" in answer.read().decode()
print(json.dumps(answers))
"""


def assert_operator_endpoints_off_the_tenant_port(
    stack: Stack, client: docker.DockerClient
) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics`` answer 404 on the published port (the API's,
    or the cluster front's) and 200 on the API's operator port inside its container."""
    for path in ("/healthz", "/readyz", "/metrics"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{stack.api}{path}", timeout=10, context=stack.trust())
        refused.value.close()
        assert refused.value.code == 404, path
    inside = json.loads(
        in_container(service_container(client, stack.api_service), _OPERATOR_ENDPOINTS)
    )
    assert inside == {"/healthz": 200, "/readyz": 200, "/metrics": 200, "api metrics": True}


def lb_gone(stack: Stack, lb_id: str, timeout: float) -> bool:
    """True once the API answers 404 (or DELETED) for the LB."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lb = stack.call("GET", f"/v2/lbaas/loadbalancers/{lb_id}")["loadbalancer"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return True
            raise
        if lb["provisioning_status"] == "DELETED":
            return True
        time.sleep(0.1)
    return False


def service_container(client: docker.DockerClient, service: str) -> Any:
    (found,) = client.containers.list(
        all=True,
        filters={"label": [f"com.docker.compose.project={PROJECT}",
                           f"com.docker.compose.service={service}"]},
    )  # fmt: skip
    return found


def in_container(container: Any, script: str, uid: str = "") -> str:
    """Output of the Python ``script`` run in ``container`` (the control-plane image's), as
    ``uid`` when given (else root)."""
    user = f"{uid}:{uid}" if uid else ""
    code, output = container.exec_run(["python3", "-c", script], user=user)
    text: str = output.decode()
    assert code == 0, text
    return text.strip()


_PATRONI_MEMBERS = """
import json, urllib.request
with urllib.request.urlopen("http://127.0.0.1:8008/cluster", timeout=3) as answer:
    print(json.dumps({m["name"]: m["role"] for m in json.load(answer)["members"]}))
"""
# On the primary: its standbys as pg_stat_replication lists them (name, state, sync_state).
_REPLICATION = """
import subprocess
from pathlib import Path
from deploy.local.embedded import find_postgres_bin_dir
password = Path("/var/lib/fulcrum/secrets/postgres.password").read_text().strip()
query = "SELECT application_name, state, sync_state FROM pg_stat_replication"
print(subprocess.run(
    [str(find_postgres_bin_dir() / "psql"), "-h", "127.0.0.1", "-U", "postgres", "-Atc", query],
    env={"PGPASSWORD": password}, capture_output=True, text=True, check=True).stdout)
"""


def patroni_roles(
    client: docker.DockerClient, done: Callable[[dict[str, str]], bool], timeout: float
) -> dict[str, str]:
    """Each member's role as Patroni (asked on a running member) reports it, once ``done``
    holds for them."""
    deadline = time.monotonic() + timeout
    roles: dict[str, str] = {}
    while not done(roles):
        assert time.monotonic() < deadline, f"Patroni roles {roles}"
        time.sleep(0.5)
        for member in ("pg0", "pg1"):
            container = service_container(client, member)
            if container.status == "running":
                with contextlib.suppress(AssertionError, ValueError):
                    roles = json.loads(in_container(container, _PATRONI_MEMBERS))
                    break
    return roles


def create_lb(stack: Stack, name: str) -> tuple[int | str, str | None]:
    """POST an LB through the front: the HTTP status (or the error's name) and its id."""
    body = {"loadbalancer": {"name": name, "vip_subnet_id": "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"}}
    try:
        created = stack.call("POST", "/v2/lbaas/loadbalancers", body)
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError as exc:
        return type(exc).__name__, None
    return 201, created["loadbalancer"]["id"]


def test_compose_cluster_profile_fails_over_its_patroni_primary(
    cluster_stack: Stack, docker_client: docker.DockerClient
) -> None:
    stack = cluster_stack
    # Patroni bootstraps pg0 or pg1, whichever takes the leader key first.
    roles = patroni_roles(
        docker_client, lambda r: sorted(r.values()) == ["leader", "sync_standby"], 60
    )
    old = next(name for name, role in roles.items() if role == "leader")
    new = next(name for name in roles if name != old)
    standbys = in_container(service_container(docker_client, old), _REPLICATION)
    assert standbys == f"{new}|streaming|sync"

    status, lb_id = create_lb(stack, "before")
    assert status == 201 and lb_id is not None
    wait_lb(stack, lb_id, "ACTIVE")

    service_container(docker_client, old).kill()
    killed = time.monotonic()
    answers: Counter[int | str] = Counter()
    while True:
        status, lb_id = create_lb(stack, "after")
        answers[status] += 1
        if lb_id is not None:
            break
        assert time.monotonic() - killed < 90, f"no write accepted: {answers}\n{stack.logs()}"
        time.sleep(0.5)
    print(f"{old} killed: writes accepted again after {time.monotonic() - killed:.1f} s {answers}")
    assert set(answers) <= {503, 201}
    patroni_roles(docker_client, lambda r: r.get(new) == "leader" and r.get(old) != "leader", 30)
    wait_lb(stack, lb_id, "ACTIVE")
    assert_operator_endpoints_off_the_tenant_port(stack, docker_client)
    assert_https_only(stack)
