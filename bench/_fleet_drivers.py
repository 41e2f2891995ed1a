"""The amphora drivers bench_fleet.py can run its fleet on: what each needs from the stack
(settings per service, VIPs, a listener port) and the clean-up of what it made.

- ``process`` (default): amphorae are processes on this host, VIPs on loopback (127.77.x.y).
- ``netns`` (root): each amphora in a network namespace on a bridge of its own network, a /24
  of 198.18.96.0/19 that no host route uses (``tests/integration/netns/lab.py``); VIPs from its
  upper half; health listens on the network's gateway, the host's address on it.
- ``docker``: amphorae are containers of the amphora image (built by deploy/images.py) on the
  engine bench_docker_create.py uses (the private one of ``.state/docker``, started here unless
  it runs; FULCRUM_BENCH_DOCKER_HOST for another), on a VIP and a management network of two
  /24s of 198.18.128.0/18 reserved on this host; VIPs below docker's dynamic range; the
  networks are made first, and health listens on the management gateway. The provisioner's
  boot timeout is 120 s (default 20 s): 16 containers booting at once on two shared cores
  took longer, and their LBs went to ERROR.

Every namespace, link, container and network made here is removed on the way out, also after
a failure. Not a benchmark itself (``make bench`` skips ``_*.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench._harness import SUBNET, Vips, free_port
from libs.common.pki import DeploymentCA

REPO: Final = Path(__file__).resolve().parents[1]
DRIVERS: Final = ("process", "netns", "docker")
# netns and docker fleets share one /24 of VIPs and amphorae: bounded.
MAX_NETWORK_FLEET: Final = 100
DOCKER_DEPLOYMENT: Final = "fulcrum-bench-fleet"
AMPHORA_IMAGE: Final = "fulcrum/amphora:latest"
DOCKER_BOOT_TIMEOUT: Final = 120.0


class NetworkVips(Vips):
    """VIPs ``first``, ``first + 1``, ... of a driver's VIP network."""

    def __init__(self, first: ipaddress.IPv4Address, last: ipaddress.IPv4Address) -> None:
        super().__init__()
        self._next = first
        self._last = last

    def next(self) -> str:
        if self._next > self._last:
            raise RuntimeError(f"no VIP left after {self._last}")
        vip, self._next = self._next, self._next + 1
        return str(vip)


@dataclass
class FleetDriver:
    """What bench_fleet needs to run its stack on one driver.

    ``env``: settings per service (``FULCRUM_<SERVICE>_`` left out) laid over the bench's own;
    ``docker_host``: the engine's URL (docker only).
    """

    name: str
    vips: Vips
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    docker_host: str | None = None


def listener_port(vip: str) -> int:
    """A free port of this host on a loopback ``vip`` (the process driver's amphorae share the
    host's ports); 80 on any other (each amphora has a network stack of its own)."""
    if ipaddress.ip_address(vip).is_loopback:
        return free_port(vip)
    return 80


@dataclass(frozen=True)
class ContainerMemory:
    """Means per amphora container, MB: proportional set size of its HAProxy processes and of
    the rest (the agent, the init), its memory cgroup's usage (page cache and kernel memory
    included), and the PSS of the containerd shim that runs it (outside its cgroup)."""

    containers: int
    agent: float
    haproxy: float
    cgroup: float
    shim: float


def memory_cgroup(pid: int) -> tuple[Path, Path]:
    """The directory of ``pid``'s memory cgroup and its usage file: ``memory.current`` under
    cgroup v2, ``memory.usage_in_bytes`` under v1's memory controller."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            group = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            return group, group / "memory.usage_in_bytes"
    for line in lines:
        if line.startswith("0::"):
            group = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
            return group, group / "memory.current"
    raise RuntimeError(f"no memory cgroup for pid {pid}: {lines}")


def docker_memory(url: str, pss_kb: Callable[[int], int]) -> ContainerMemory:
    """The memory of the bench deployment's amphora containers that run an HAProxy (spares do
    not), ``pss_kb(pid)`` being a process's PSS in kB."""
    import docker

    from services.provisioner.drivers.docker import LABEL_DEPLOYMENT

    client = docker.DockerClient(base_url=url, version="auto", timeout=120)
    try:
        label = f"{LABEL_DEPLOYMENT}={DOCKER_DEPLOYMENT}"
        containers = client.containers.list(filters={"label": label, "status": "running"})
        init_pids = [int(c.attrs["State"]["Pid"]) for c in containers]
    finally:
        client.close()
    agent = haproxy = cgroup = shim = count = 0
    for init in init_pids:
        group, usage = memory_cgroup(init)
        by_kind = {"haproxy": 0, "agent": 0}
        for pid in (int(p) for p in (group / "cgroup.procs").read_text().split()):
            try:
                command = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            by_kind["haproxy" if command.startswith("haproxy") else "agent"] += pss_kb(pid)
        if not by_kind["haproxy"]:
            continue  # a spare: no load balancer yet, as amphora_memory counts
        count += 1
        agent, haproxy = agent + by_kind["agent"], haproxy + by_kind["haproxy"]
        cgroup += int(usage.read_text()) // 1024
        status = Path(f"/proc/{init}/status").read_text()
        parent = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")
        )
        shim += pss_kb(parent)
    if not count:
        raise RuntimeError(f"no amphora container serving a load balancer on {url}")
    mb = 1024 * count
    return ContainerMemory(count, agent / mb, haproxy / mb, cgroup / mb, shim / mb)


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def subnet_config(cidr: ipaddress.IPv4Network, first: int, last: int) -> str:
    """FULCRUM_API_NETWORK__SUBNETS: the bench's subnet id on ``cidr``, VIPs ``first``-``last``."""
    return json.dumps(
        [
            {
                "id": SUBNET,
                "name": "fleet-subnet",
                "network_id": "0c9a4e2b-8d7f-4f6e-a1b2-3c4d5e6f7a81",
                "network_name": "fleet",
                "cidr": str(cidr),
                "allocation_start": str(cidr[first]),
                "allocation_end": str(cidr[last]),
            }
        ]
    )


def network_env(
    driver: str, cidr: ipaddress.IPv4Network, first: int, last: int, gateway: str
) -> dict[str, dict[str, str]]:
    """Settings every network driver needs: the API's subnet and driver, health on
    ``gateway`` (where the amphorae send their heartbeats)."""
    udp = free_udp_port(gateway)
    return {
        "api": {"NETWORK__SUBNETS": subnet_config(cidr, first, last), "AMPHORA_DRIVER": driver},
        "provisioner": {"DRIVER": driver, "HEALTH_ENDPOINTS": json.dumps([f"{gateway}:{udp}"])},
        "health": {"UDP_HOST": gateway, "UDP_PORT": str(udp)},
    }


@contextlib.asynccontextmanager
async def netns_driver() -> AsyncIterator[FleetDriver]:
    from services.provisioner.drivers.netns import NetnsAmphoraDriver
    from tests.integration.netns.lab import NetnsLab

    lab = NetnsLab.create()
    try:
        with tempfile.TemporaryDirectory(prefix="fulcrum-bench-fleet-netns-") as tmp:
            # The network first: health listens on its gateway address.
            prep = NetnsAmphoraDriver(
                lab.driver_settings,
                Path(tmp) / "prep",
                DeploymentCA.load_or_create(Path(tmp) / "ca"),
            )
            await prep.prepare_network(lab.network.name)
        settings = lab.driver_settings
        env = network_env("netns", lab.subnet, 128, 249, lab.network.gateway)
        env["provisioner"] |= {
            "NETNS__NAMESPACE_PREFIX": settings.namespace_prefix,
            "NETNS__NETWORK_PREFIX": settings.network_prefix,
            "NETNS__NETWORKS": json.dumps([lab.network.model_dump()]),
        }
        print(f"netns: network {lab.subnet} (amphorae {lab.network.ip_range})")
        yield FleetDriver("netns", NetworkVips(lab.subnet[128], lab.subnet[249]), env)
    finally:
        lab.cleanup()
        left = lab.leftovers()
        if left:
            print(f"WARNING: left behind: {left}")


def remove_docker_resources(url: str, names: list[str]) -> None:
    """Every container of the bench's deployment, and the networks ``names``."""
    import docker

    from services.provisioner.drivers.docker import LABEL_DEPLOYMENT

    client = docker.DockerClient(base_url=url, version="auto", timeout=120)
    try:
        label = f"{LABEL_DEPLOYMENT}={DOCKER_DEPLOYMENT}"
        for container in client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True, v=True)
        for network in client.networks.list(names=names):
            if network.name in names:
                network.remove()
    finally:
        client.close()


@contextlib.asynccontextmanager
async def docker_driver() -> AsyncIterator[FleetDriver]:
    from bench.bench_docker_create import engine
    from deploy.local.dockerd import reserved_subnets
    from services.provisioner.drivers.docker import DockerAmphoraDriver
    from services.provisioner.settings import DockerDriverSettings, DockerNetworkSettings

    candidates = [f"198.18.{n}.0/24" for n in range(128, 192)]
    with engine() as url, reserved_subnets(candidates, 2) as reserved:
        built = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(REPO / "deploy" / "images.py"), "--docker-host", url],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if built.returncode != 0:
            raise RuntimeError(f"building the images failed:\n{built.stdout}{built.stderr}")
        vip_net, mgmt_net = (ipaddress.IPv4Network(cidr) for cidr in reserved)
        vip = DockerNetworkSettings(
            name=f"{DOCKER_DEPLOYMENT}-vip",
            subnet=str(vip_net),
            gateway=str(vip_net[1]),
            ip_range=str(list(vip_net.subnets(new_prefix=25))[1]),
        )
        mgmt = DockerNetworkSettings(
            name=f"{DOCKER_DEPLOYMENT}-mgmt", subnet=str(mgmt_net), gateway=str(mgmt_net[1])
        )
        settings = DockerDriverSettings(
            host=url,
            image=AMPHORA_IMAGE,
            deployment=DOCKER_DEPLOYMENT,
            mgmt_network=mgmt,
            vip_networks=[vip],
        )
        names = [vip.name, mgmt.name]
        try:
            remove_docker_resources(url, names)
            with tempfile.TemporaryDirectory(prefix="fulcrum-bench-fleet-docker-") as tmp:
                # The networks first: health listens on the management gateway.
                prep = DockerAmphoraDriver(settings, DeploymentCA.load_or_create(Path(tmp)))
                try:
                    await prep.prepare_networks()
                finally:
                    await prep.close()
            assert mgmt.gateway is not None
            env = network_env("docker", vip_net, 10, 120, mgmt.gateway)
            env["provisioner"] |= {
                "DOCKER__HOST": url,
                "DOCKER__IMAGE": AMPHORA_IMAGE,
                "DOCKER__DEPLOYMENT": DOCKER_DEPLOYMENT,
                "DOCKER__MGMT_NETWORK": mgmt.model_dump_json(),
                "DOCKER__VIP_NETWORKS": json.dumps([vip.model_dump()]),
                # 16 containers booting at once on two shared cores outlast the default 20 s.
                "BOOT_TIMEOUT": str(DOCKER_BOOT_TIMEOUT),
            }
            print(
                f"docker: engine {url}, VIP network {vip_net}, management {mgmt_net}, "
                f"boot timeout {DOCKER_BOOT_TIMEOUT:g} s"
            )
            yield FleetDriver("docker", NetworkVips(vip_net[10], vip_net[120]), env, url)
        finally:
            remove_docker_resources(url, names)


@contextlib.asynccontextmanager
async def fleet_driver(name: str) -> AsyncIterator[FleetDriver]:
    """The driver ``name`` (one of DRIVERS) ready for a stack; cleaned up after."""
    if name == "process":
        yield FleetDriver("process", Vips())
    elif name == "netns":
        async with netns_driver() as driver:
            yield driver
    elif name == "docker":
        async with docker_driver() as driver:
            yield driver
    else:
        raise ValueError(f"unknown driver {name!r}: one of {DRIVERS}")
