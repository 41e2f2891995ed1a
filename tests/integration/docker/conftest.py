"""Fixtures of the docker-driver tests: a real engine, the amphora image, our own networks.

Everything runs on the engine of `engine.py` under the deployment label `fulcrum-it` and on two
networks of its own (a VIP and a management /24 reserved on the host for this test process, see
`reserved_subnets`), so it never collides with a compose stack, nor with a test run of another
checkout on another engine. Containers and networks the tests made are removed after each test,
also when it fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.types
import pytest
from testcontainers.core.container import DockerContainer

from deploy.local.dockerd import reserved_subnets
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.drivers.docker import LABEL_DEPLOYMENT, DockerAmphoraDriver
from services.provisioner.settings import DockerDriverSettings, DockerNetworkSettings
from tests.integration.docker import engine
from tests.integration.docker.engine import AMPHORA_IMAGE

# The session fixtures shared with tests/e2e.
docker_host = engine.docker_host
docker_images = engine.docker_images
docker_client = engine.docker_client

DEPLOYMENT = "fulcrum-it"
# Reserved for the whole test process (the lock files are released when it exits).
_RESERVATION = reserved_subnets([f"198.18.{n}.0/24" for n in range(128, 192)], 2)
_VIP_SUBNET, _MGMT_SUBNET = (ipaddress.ip_network(s) for s in _RESERVATION.__enter__())
VIP_NETWORK = DockerNetworkSettings(
    name="fulcrum-it-vip",
    subnet=str(_VIP_SUBNET),
    gateway=str(_VIP_SUBNET[1]),
    ip_range=str(list(_VIP_SUBNET.subnets(new_prefix=25))[1]),
)
MGMT_NETWORK = DockerNetworkSettings(
    name="fulcrum-it-mgmt", subnet=str(_MGMT_SUBNET), gateway=str(_MGMT_SUBNET[1])
)


def vip(host: int) -> str:
    """Address ``host`` of the test VIP network (below 128: outside docker's ip_range)."""
    return str(_VIP_SUBNET[host])


BACKEND_PORT = 8000


def driver_settings(docker_host: str, **overrides: object) -> DockerDriverSettings:
    fields: dict[str, object] = {
        "host": docker_host,
        "image": AMPHORA_IMAGE,
        "deployment": DEPLOYMENT,
        "mgmt_network": MGMT_NETWORK,
        "vip_networks": [VIP_NETWORK],
    }
    return DockerDriverSettings.model_validate(fields | overrides)


def remove_test_resources(client: docker.DockerClient) -> None:
    """Remove every container of the test deployment, the backends, and the test networks."""
    for container in client.containers.list(
        all=True, filters={"label": f"{LABEL_DEPLOYMENT}={DEPLOYMENT}"}
    ):
        container.remove(force=True, v=True)
    for network in (VIP_NETWORK, MGMT_NETWORK):
        for found in client.networks.list(names=[network.name]):
            if found.name == network.name:
                found.reload()
                for container_id in found.attrs.get("Containers") or {}:
                    with contextlib.suppress(docker.errors.NotFound):
                        client.containers.get(container_id).remove(force=True, v=True)
                found.remove()


def create_test_network(
    client: docker.DockerClient, network: DockerNetworkSettings, internal: bool
) -> None:
    """One test network (IPv4), labelled for the test deployment, as the driver makes it."""
    pool = docker.types.IPAMPool(
        subnet=network.subnet, gateway=network.gateway, iprange=network.ip_range
    )
    client.networks.create(
        network.name,
        driver="bridge",
        internal=internal,
        ipam=docker.types.IPAMConfig(pool_configs=[pool]),
        labels={LABEL_DEPLOYMENT: DEPLOYMENT},
    )


def create_test_networks(client: docker.DockerClient) -> None:
    """The test VIP and management networks, as the driver makes them (it finds them then)."""
    create_test_network(client, VIP_NETWORK, internal=False)
    create_test_network(client, MGMT_NETWORK, internal=True)


@dataclass
class Pki:
    ca: DeploymentCA
    client_cert: Path
    client_key: Path

    def agent(self, handle: AmphoraHandle) -> AmphoraAgentClient:
        """A mutual-TLS client of the amphora's agent that checks the amphora id."""
        return AmphoraAgentClient(
            handle.agent_url,
            self.ca.cert_path,
            self.client_cert,
            self.client_key,
            server_name=handle.amphora_id,
        )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("docker-pki")
    ca = DeploymentCA.load_or_create(directory / "ca")
    issued = ca.issue_client_cert("fulcrum-provisioner")
    write_private_file(directory / "client.pem", issued.cert_pem, mode=0o644)
    write_private_file(directory / "client.key", issued.key_pem)
    return Pki(ca, directory / "client.pem", directory / "client.key")


@pytest.fixture
def clean_engine(
    docker_client: docker.DockerClient, docker_images: list[str]
) -> Iterator[docker.DockerClient]:
    """The engine, with the images built, and without test leftovers before and after."""
    remove_test_resources(docker_client)
    try:
        yield docker_client
    finally:
        remove_test_resources(docker_client)


@pytest.fixture
async def driver(
    docker_host: str, clean_engine: docker.DockerClient, pki: Pki
) -> AsyncIterator[DockerAmphoraDriver]:
    running = DockerAmphoraDriver(driver_settings(docker_host), pki.ca, boot_timeout=20)
    try:
        yield running
    finally:
        await running.close()


@dataclass
class BackendContainer:
    name: str
    address: str
    port: int = BACKEND_PORT


def _backend_command(name: str) -> str:
    return (
        f"mkdir -p /srv && printf {name} > /srv/index.html && cd /srv && "
        f"exec python3 -m http.server {BACKEND_PORT} --bind 0.0.0.0"
    )


@contextlib.contextmanager
def backend_containers(names: list[str], network: str) -> Iterator[list[BackendContainer]]:
    """HTTP servers answering their own name, one container each on `network` (testcontainers;
    the engine comes from DOCKER_HOST, which the docker_host fixture sets)."""
    started: list[DockerContainer] = []
    try:
        backends = []
        for name in names:
            container = (
                DockerContainer(AMPHORA_IMAGE)
                .with_kwargs(
                    entrypoint=["sh", "-c"],
                    network=network,
                    labels={LABEL_DEPLOYMENT: DEPLOYMENT, "fulcrum.test": "backend"},
                )
                .with_command([_backend_command(name)])
            )
            container.start()
            started.append(container)
            wrapped = container.get_wrapped_container()
            wrapped.reload()
            address = wrapped.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
            backends.append(BackendContainer(name, address))
        for backend in backends:
            wait_http(f"http://{backend.address}:{backend.port}/", 20)
        yield backends
    finally:
        for container in started:
            with contextlib.suppress(Exception):
                container.stop()
            container.get_docker_client().client.close()


def wait_http(url: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return str(answer.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
