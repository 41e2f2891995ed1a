"""The ``docker`` driver: an amphora is a container of the amphora image on one docker engine.

Containers are named ``amphora-<amphora_id>`` and labelled with the deployment, amphora id, LB
id, role, topology, VIP and certificate expiry, so ``list`` (and reconciliation: orphans,
missing amphorae) reads everything from the engine; the driver keeps no local state.

Networks (created when missing, with the configured subnets inside 198.18.0.0/15):

- the management network (internal: no route out), the container's ``eth0``. The agent
  listens only on the amphora's address there, port 9443, mutual TLS; ``agent_url`` is
  ``https://<that address>:9443``. The provisioner dials it directly, from the engine's host
  (docker's bridges are routed there) or from a container attached to the same network (compose
  attaches the provisioner, and the health service that receives the heartbeats). No port is
  published, so nothing listens on the host's interfaces.
- the VIP network whose subnet holds the VIP, the container's ``eth1`` (plugged after start,
  while the agent boots) and its default route. The amphora's own address there comes from the
  network's ``ip_range`` and is the handle's ``lb_network_ip``: keepalived's unicast VRRP runs
  between these addresses. The VIP itself is not a docker address (the API allocates VIPs
  outside ``ip_range``): the agent holds it on ``eth1`` (``FULCRUM_AMPHORA_VIP_INTERFACE``)
  when the configurator asks, as a /32 with gratuitous ARP (SINGLE) or through keepalived
  (ACTIVE_STANDBY; NET_ADMIN, and ``ip_nonlocal_bind`` for the BACKUP's HAProxy). UDP
  listeners are served by the agent's nftables DNAT in the container (NET_ADMIN, and
  forwarding set at create: the container cannot write /proc/sys). A VIP network with
  ``subnet6`` is dual stack: an IPv6 VIP is held as a /128 on ``eth1`` with unsolicited
  neighbour advertisements. A spare
  (no VIP yet) is put on the first VIP network, so it can serve any VIP of that network once
  an LB claims it.

ACTIVE_ACTIVE load balancers (``distribution``) get the netns driver's distributor
(adapters/netns_distributor.py) over ``DockerDistributorNetwork``: the distributor namespace
``fdk-d<12 hex of the LB id>`` holds the VIP on the VIP network's Linux bridge (a veth port of
its own) and that network's gateway as its default route; each amphora container's network
namespace is named ``fdk-<12 hex of the amphora id>`` (``ip netns attach``, when it is added
to the distributor; ``delete`` removes the name) and gets the VIP on ``lo`` and its link to
the distributor. The agent plugs no VIP on ``eth1`` then (the configurator asks none).
Needs the provisioner as root on the engine's host, with iproute2, nft and conntrack; a
provisioner that is not root (compose runs it as an unprivileged user) has no distribution, and
its ACTIVE_ACTIVE load balancers fail with the reason before any container starts.

The agent's server certificate (for the amphora id) and the CA are copied into the container
right after it starts, while the agent's Python imports run (the agent waits for them,
``FULCRUM_AMPHORA_CERT_WAIT``): no bind mount, so the provisioner may run in a container itself.
Blocking SDK calls run in threads. Every engine failure becomes InfrastructureError, and a
failed ``ensure`` removes the container it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import ipaddress
import os
import socket
import tarfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import docker
import docker.errors
import docker.types
import requests

from libs.common.errors import FulcrumError, InfrastructureError
from libs.common.pki import DeploymentCA, IssuedCertificate
from services.provisioner.adapters.netns_distributor import NetnsDistributors
from services.provisioner.adapters.netns_network import IpRoute, namespace_exists, short_id
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec, Leftovers
from services.provisioner.settings import DockerDriverSettings, DockerNetworkSettings

__all__ = [
    "DRIVER_NAME",
    "DockerAmphoraDriver",
    "DockerDistributorNetwork",
    "container_name",
    "namespace_name",
]

DRIVER_NAME: Final = "docker"
CERT_DIR: Final = "/etc/fulcrum/amphora"
LABEL_DEPLOYMENT: Final = "fulcrum.deployment"
LABEL_AMPHORA: Final = "fulcrum.amphora_id"
LABEL_LB: Final = "fulcrum.lb_id"
LABEL_ROLE: Final = "fulcrum.role"
LABEL_TOPOLOGY: Final = "fulcrum.topology"
LABEL_VIP: Final = "fulcrum.vip_address"
LABEL_VIP_NETWORK: Final = "fulcrum.vip_network"
LABEL_CERT_EXPIRATION: Final = "fulcrum.cert_expiration"
# Labels that make up an amphora's spec: an existing container must match them.
_SPEC_LABELS: Final = (LABEL_LB, LABEL_ROLE, LABEL_TOPOLOGY, LABEL_VIP)
# The container's interfaces: the management network at create, the VIP network after start.
VIP_INTERFACE: Final = "eth1"
_STATE_CHECK_INTERVAL: Final = 0.5
_DEFAULT_HOST: Final = "unix:///var/run/docker.sock"
_LOG_TAIL_LINES: Final = 40
# Names of the network namespaces of ACTIVE_ACTIVE amphorae and distributors on the host.
NAMESPACE_PREFIX: Final = "fdk-"
_BRIDGE_NAME_OPTION: Final = "com.docker.network.bridge.name"
_IP_COMMAND_TIMEOUT: Final = 10.0

T = TypeVar("T")
Handles = list[AmphoraHandle]


def container_name(amphora_id: str) -> str:
    return f"amphora-{amphora_id}"


def namespace_name(amphora_id: str) -> str:
    """The name the amphora container's network namespace gets on the host (ACTIVE_ACTIVE)."""
    return f"{NAMESPACE_PREFIX}{short_id(amphora_id)}"


class DockerAmphoraDriver:
    """Runs amphorae as containers; idempotent by container name."""

    name = DRIVER_NAME

    def __init__(
        self,
        settings: DockerDriverSettings,
        ca: DeploymentCA,
        agent_env: dict[str, str] | None = None,
        boot_timeout: float = 20.0,
        cert_validity_days: int = 30,
    ) -> None:
        self._settings = settings
        self._ca = ca
        self._agent_env = agent_env or {}
        self._boot_timeout = boot_timeout
        self._validity = cert_validity_days
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._ip = IpRoute(_IP_COMMAND_TIMEOUT)
        # ACTIVE_ACTIVE load balancers' distributors: only a root provisioner on the engine's
        # host can name the containers' namespaces (the others refuse the topology).
        self.distribution = (
            NetnsDistributors(
                DockerDistributorNetwork(self),
                NAMESPACE_PREFIX,
                settings.distributor_links,
                _IP_COMMAND_TIMEOUT,
            )
            if os.geteuid() == 0
            else None
        )

    # -- protocol ----------------------------------------------------------------------------

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        """Start the amphora's container unless it runs with the same spec; wait for its agent.

        Raises InfrastructureError when the engine is unreachable, the image is missing, the
        name is taken by a container with another spec, or the agent does not come up within
        ``boot_timeout`` (the container is removed then).
        """
        name = container_name(spec.amphora_id)
        labels = self._labels(spec)
        mgmt = self._settings.mgmt_network
        vip_network = self._vip_network(spec.vip_address)
        existing = await self._call("inspect the container", self._inspect, name)
        if existing is not None:
            handle = self._reusable(existing, labels, vip_network)
            if handle is not None:
                await self._wait_for_agent(handle, name)
                return handle
            await self._call("remove the broken container", self._remove, name)
        await self._call(f"ensure network {mgmt.name}", self._ensure_network, mgmt, True)
        if vip_network is not None:
            await self._call(
                f"ensure network {vip_network.name}", self._ensure_network, vip_network, False
            )
        issued = self._ca.issue_server_cert(spec.amphora_id, [spec.amphora_id], self._validity)
        labels[LABEL_CERT_EXPIRATION] = issued.not_after.isoformat()
        labels[LABEL_VIP_NETWORK] = vip_network.name if vip_network is not None else ""
        try:
            await self._call(
                "create the container",
                self._create,
                name,
                labels,
                self._environment(spec, vip_network),
                mgmt.name,
                vip_network is not None and vip_network.subnet6 is not None,
            )
            await self._call("start the container", self._start, name)

            async def agent_listening() -> None:
                booting = await self._current_handle(name, labels)
                if booting is None:
                    raise InfrastructureError(f"{name} has no address on {mgmt.name}")
                await self._wait_for_agent(booting, name)

            # While the agent boots, its certificates are copied in and the VIP network is
            # plugged: the agent binds the management address, there from the start, and
            # HAProxy binds the VIP only once configured.
            archive = _certificate_archive(self._ca.cert_pem, issued)
            steps: list[Awaitable[object]] = [
                self._call("copy the certificates", self._put_archive, name, archive),
                agent_listening(),
            ]
            if vip_network is not None:
                steps.append(
                    self._call(
                        f"attach {name} to {vip_network.name}",
                        self._connect,
                        name,
                        vip_network.name,
                    )
                )
            for outcome in await asyncio.gather(*steps, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
            handle = await self._current_handle(name, labels)
            if handle is None:
                raise InfrastructureError(f"{name} vanished while starting")
        except BaseException:
            with contextlib.suppress(FulcrumError):
                await asyncio.shield(self._call("remove the container", self._remove, name))
            raise
        return handle

    async def _current_handle(self, name: str, labels: dict[str, str]) -> AmphoraHandle | None:
        """The handle of container ``name`` as the engine shows it now; None when it is gone
        or has no management address yet."""
        found = await self._call("inspect the container", self._inspect, name)
        if found is None:
            return None
        return self._handle(found["Id"], labels, found["NetworkSettings"])

    async def delete(self, amphora_id: str) -> None:
        """Remove the container (killing it) and the name of its network namespace; succeeds
        when they do not exist."""
        await self._call("remove the container", self._remove, container_name(amphora_id))
        namespace = namespace_name(amphora_id)
        if namespace_exists(namespace):
            await self._ip.run("netns", "delete", namespace)

    async def container_pid(self, amphora_id: str) -> int | None:
        """The pid of the amphora container's first process; None when it does not run."""
        return await self._call("inspect the container", self._pid, container_name(amphora_id))

    async def bridge(self, network: str) -> str:
        """The Linux bridge of docker network ``network`` on the engine's host."""
        return await self._call(f"inspect network {network}", self._bridge, network)

    def vip_network(self, name: str) -> DockerNetworkSettings:
        """The configured VIP network ``name``."""
        for network in self._settings.vip_networks:
            if network.name == name:
                return network
        raise InfrastructureError(f"docker VIP network {name!r} is not configured")

    def vip_network_for(self, vip_address: str) -> DockerNetworkSettings:
        """The VIP network whose subnet holds ``vip_address``."""
        network = self._vip_network(vip_address)
        assert network is not None  # a VIP always has one (or raised)
        return network

    async def list(self) -> list[AmphoraHandle]:
        """Running amphora containers of this deployment, from their labels."""
        return await self._call("list containers", self._running)

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        return next((h for h in await self.list() if h.amphora_id == amphora_id), None)

    async def leftovers(self) -> Sequence[str]:
        """Amphora ids of this deployment's containers that do not run (exited, created)."""
        return sorted(await self._stopped_with_lbs())

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        return await self.list(), await self._stopped_with_lbs()

    async def _stopped_with_lbs(self) -> Leftovers:
        return await self._call("list stopped containers", self._stopped)

    async def reachable_hosts(self) -> None:
        """One host: it sees every amphora it runs."""
        return None

    async def prepare(self) -> None:
        """Nothing to start ahead: the engine is reached on first use."""

    async def prepare_networks(self) -> None:
        """Create the management and VIP networks now where missing (the first amphora would),
        so that the host has its gateway addresses before any amphora boots."""
        mgmt = self._settings.mgmt_network
        await self._call(f"ensure network {mgmt.name}", self._ensure_network, mgmt, True)
        for network in self._settings.vip_networks:
            await self._call(f"ensure network {network.name}", self._ensure_network, network, False)

    async def close(self) -> None:
        """Close the engine connections (a later call opens new ones)."""
        await asyncio.to_thread(self._forget_engine)

    # -- engine calls (blocking, run in threads by _call) ------------------------------------

    def _engine(self) -> Any:
        with self._client_lock:
            if self._client is None:
                options: dict[str, Any] = {
                    "version": "auto",
                    "timeout": self._settings.api_timeout,
                }
                host = self._settings.host
                _check_unix_socket(host or os.environ.get("DOCKER_HOST") or _DEFAULT_HOST)
                self._client = (
                    docker.DockerClient(base_url=host, **options)
                    if host
                    else docker.from_env(**options)
                )
            return self._client

    def _forget_engine(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    async def _call(self, what: str, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking engine call in a thread; the one place engine errors are mapped."""
        try:
            return await asyncio.to_thread(function, *args)
        except FulcrumError:
            raise
        except docker.errors.ImageNotFound as exc:
            raise InfrastructureError(
                f"docker: cannot {what}: image {self._settings.image} is not on the engine "
                "(build it: make images)"
            ) from exc
        except docker.errors.APIError as exc:
            raise InfrastructureError(f"docker: cannot {what}: {exc.explanation or exc}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            self._forget_engine()
            where = self._settings.host or "DOCKER_HOST/default socket"
            raise InfrastructureError(
                f"docker: cannot {what}: engine at {where} unreachable: {exc}"
            ) from exc

    def _inspect(self, name: str) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = self._engine().api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        return info

    def _remove(self, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self._engine().api.remove_container(name, force=True, v=True)

    def _ensure_network(self, network: DockerNetworkSettings, internal: bool) -> None:
        client = self._engine()
        for found in client.networks.list(names=[network.name]):
            if found.name != network.name:
                continue  # the engine filters by substring
            subnets = [c.get("Subnet") for c in (found.attrs.get("IPAM") or {}).get("Config") or []]
            if network.subnet not in subnets:
                raise InfrastructureError(
                    f"docker network {network.name} has subnets {subnets}, "
                    f"configured: {network.subnet}"
                )
            return
        pools = [
            docker.types.IPAMPool(
                subnet=network.subnet, gateway=network.gateway, iprange=network.ip_range
            )
        ]
        if network.subnet6 is not None:
            pools.append(
                docker.types.IPAMPool(
                    subnet=network.subnet6, gateway=network.gateway6, iprange=network.ip_range6
                )
            )
        try:
            client.networks.create(
                network.name,
                driver="bridge",
                ipam=docker.types.IPAMConfig(pool_configs=pools),
                enable_ipv6=network.subnet6 is not None,
                internal=internal,
                labels={LABEL_DEPLOYMENT: self._settings.deployment},
                check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: another provisioner created it meanwhile
                raise

    def _create(
        self,
        name: str,
        labels: dict[str, str],
        environment: dict[str, str],
        network: str,
        dual_stack: bool,
    ) -> None:
        api = self._engine().api
        # keepalived's backup binds the VIP before it holds it; UDP listeners are DNATed to
        # the members by nftables in the container, which forwards them (/proc/sys is
        # read-only inside the container, so the agent cannot).
        sysctls = {"net.ipv4.ip_nonlocal_bind": "1", "net.ipv4.ip_forward": "1"}
        if dual_stack:
            sysctls |= {
                "net.ipv6.conf.all.disable_ipv6": "0",
                "net.ipv6.conf.all.forwarding": "1",
                "net.ipv6.ip_nonlocal_bind": "1",
            }
        api.create_container(
            self._settings.image,
            name=name,
            hostname=name[:63],
            labels=labels,
            environment=environment,
            detach=True,
            host_config=api.create_host_config(
                cap_add=["NET_ADMIN"],
                init=True,
                sysctls=sysctls,
            ),
            networking_config=api.create_networking_config({network: api.create_endpoint_config()}),
        )

    def _pid(self, name: str) -> int | None:
        info = self._inspect(name)
        if info is None or not info["State"].get("Running"):
            return None
        return int(info["State"].get("Pid") or 0) or None

    def _bridge(self, network: str) -> str:
        found = self._engine().api.inspect_network(network)
        name = (found.get("Options") or {}).get(_BRIDGE_NAME_OPTION)
        return str(name) if name else f"br-{found['Id'][:12]}"

    def _connect(self, name: str, network: str) -> None:
        self._engine().api.connect_container_to_network(name, network)

    def _put_archive(self, name: str, archive: bytes) -> None:
        if not self._engine().api.put_archive(name, CERT_DIR, archive):
            raise InfrastructureError(f"docker: copying certificates into {name} failed")

    def _start(self, name: str) -> None:
        self._engine().api.start(name)

    def _state(self, name: str) -> tuple[bool, str]:
        """(running, last log lines) of a container."""
        api = self._engine().api
        info = api.inspect_container(name)
        if info["State"].get("Running"):
            return True, ""
        logs = api.logs(name, tail=_LOG_TAIL_LINES).decode(errors="replace")
        return False, f"exit code {info['State'].get('ExitCode')}; log tail:\n{logs.strip()}"

    def _ours(self) -> Sequence[str]:
        """The label filter of this deployment's amphora containers."""
        return [f"{LABEL_DEPLOYMENT}={self._settings.deployment}", LABEL_AMPHORA]

    def _running(self) -> Handles:
        summaries = self._engine().api.containers(
            filters={"label": self._ours(), "status": "running"}
        )
        handles: Handles = []
        for summary in summaries:
            handle = self._handle(
                summary["Id"], summary.get("Labels") or {}, summary.get("NetworkSettings") or {}
            )
            if handle is not None:
                handles.append(handle)
        return sorted(handles, key=lambda h: h.amphora_id)

    def _stopped(self) -> Leftovers:
        """This deployment's containers that do not run (exited, or created by a build in
        flight), with the LB their labels name."""
        summaries = self._engine().api.containers(all=True, filters={"label": self._ours()})
        stopped: dict[str, str | None] = {}
        for summary in summaries:
            if summary.get("State") != "running":
                labels = summary.get("Labels") or {}
                stopped[labels[LABEL_AMPHORA]] = labels.get(LABEL_LB) or None
        return stopped

    # -- pure helpers ------------------------------------------------------------------------

    def _reusable(
        self,
        existing: dict[str, Any],
        labels: dict[str, str],
        vip_network: DockerNetworkSettings | None,
    ) -> AmphoraHandle | None:
        """The handle of an existing container of the same spec that runs and is plugged into
        its networks; None when it must be replaced. Raises when the spec differs."""
        present = existing["Config"].get("Labels") or {}
        differing = [k for k in _SPEC_LABELS if present.get(k, "") != labels[k]]
        if differing:
            wanted = {k: labels[k] for k in differing}
            found = {k: present.get(k) for k in differing}
            raise InfrastructureError(
                f"container {existing['Name'].lstrip('/')} exists with another spec: "
                f"{found}, wanted {wanted}"
            )
        networks = existing["NetworkSettings"].get("Networks") or {}
        if not existing["State"].get("Running"):
            return None
        if vip_network is not None and vip_network.name not in networks:
            return None  # a previous ensure died before plugging the VIP network
        return self._handle(existing["Id"], present, existing["NetworkSettings"])

    def _labels(self, spec: AmphoraSpec) -> dict[str, str]:
        return {
            **spec.labels,
            LABEL_DEPLOYMENT: self._settings.deployment,
            LABEL_AMPHORA: spec.amphora_id,
            LABEL_LB: spec.lb_id or "",
            LABEL_ROLE: spec.role,
            LABEL_TOPOLOGY: spec.topology,
            LABEL_VIP: spec.vip_address or "",
        }

    def _environment(
        self, spec: AmphoraSpec, vip_network: DockerNetworkSettings | None
    ) -> dict[str, str]:
        environment = {
            **self._agent_env,
            "FULCRUM_AMPHORA_AMPHORA_ID": spec.amphora_id,
            "FULCRUM_AMPHORA_LB_ID": spec.lb_id or "",
            "FULCRUM_AMPHORA_BIND_PORT": str(self._settings.agent_port),
            "FULCRUM_AMPHORA_MGMT_CIDR": self._settings.mgmt_network.subnet,
            # The certificates arrive after the start (``ensure``).
            "FULCRUM_AMPHORA_CERT_WAIT": str(self._boot_timeout),
        }
        if vip_network is not None:
            environment["FULCRUM_AMPHORA_VIP_INTERFACE"] = VIP_INTERFACE
        return environment

    def _vip_network(self, vip_address: str | None) -> DockerNetworkSettings | None:
        """The VIP network holding ``vip_address``; for a spare (no VIP) the first one, so a
        claimed spare can serve VIPs of that network."""
        if vip_address is None:
            return self._settings.vip_networks[0] if self._settings.vip_networks else None
        address = ipaddress.ip_address(vip_address)
        for network in self._settings.vip_networks:
            subnets = (network.subnet, network.subnet6) if network.subnet6 else (network.subnet,)
            if any(address in ipaddress.ip_network(subnet) for subnet in subnets):
                return network
        configured = ", ".join(f"{n.name} {n.subnet}" for n in self._settings.vip_networks)
        raise InfrastructureError(
            f"VIP {vip_address} is in no docker VIP network (configured: {configured or 'none'})"
        )

    def _handle(
        self, container_id: str, labels: dict[str, str], network_settings: dict[str, Any]
    ) -> AmphoraHandle | None:
        """The handle of a container: the agent at its management address; ``lb_network_ip``
        its own address on the VIP network (the management one while it has none)."""
        networks = network_settings.get("Networks") or {}
        agent = (networks.get(self._settings.mgmt_network.name) or {}).get("IPAddress")
        if not agent:
            return None
        vip_network = labels.get(LABEL_VIP_NETWORK) or ""
        own = (networks.get(vip_network) or {}).get("IPAddress") if vip_network else None
        return AmphoraHandle(
            amphora_id=labels[LABEL_AMPHORA],
            lb_id=labels.get(LABEL_LB) or None,
            driver=DRIVER_NAME,
            compute_id=container_id,
            agent_url=f"https://{agent}:{self._settings.agent_port}",
            lb_network_ip=own or agent,
            cert_expiration=labels.get(LABEL_CERT_EXPIRATION) or None,
            role=labels.get(LABEL_ROLE) or "STANDALONE",
        )

    async def _wait_for_agent(self, handle: AmphoraHandle, name: str) -> None:
        """Until the agent accepts TCP connections; fails early when the container exits."""
        address = urlsplit(handle.agent_url).hostname
        deadline = time.monotonic() + self._boot_timeout
        next_state_check = time.monotonic() + _STATE_CHECK_INTERVAL
        while True:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(address, self._settings.agent_port),
                    timeout=1.0,
                )
            except (OSError, TimeoutError):
                pass
            else:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            now = time.monotonic()
            if now >= next_state_check:
                running, why = await self._call("inspect the container", self._state, name)
                if not running:
                    raise InfrastructureError(f"amphora {handle.amphora_id} stopped: {why}")
                next_state_check = now + _STATE_CHECK_INTERVAL
            if now >= deadline:
                raise InfrastructureError(
                    f"agent of amphora {handle.amphora_id} not listening on "
                    f"{address}:{self._settings.agent_port} "
                    f"after {self._boot_timeout:.0f} s"
                )
            await asyncio.sleep(0.02)


class DockerDistributorNetwork:
    """The docker driver's VIP networks as a distributor needs them (``DistributorNetwork``
    of adapters/netns_distributor.py): namespaces plug into a network's Linux bridge with a
    veth; an amphora's namespace is its container's, named with ``ip netns attach``."""

    def __init__(self, driver: DockerAmphoraDriver) -> None:
        self._driver = driver
        self._ip = IpRoute(_IP_COMMAND_TIMEOUT)

    def namespace_for(self, amphora_id: str) -> str:
        return namespace_name(amphora_id)

    async def name_namespace(self, amphora_id: str) -> str:
        """Names the running container's namespace (again, when the name is stale)."""
        name = namespace_name(amphora_id)
        pid = await self._driver.container_pid(amphora_id)
        if pid is None:
            raise InfrastructureError(f"amphora {amphora_id} has no running container")
        if namespace_exists(name):
            if _same_namespace(name, pid):
                return name
            await self._ip.run("netns", "delete", name)
        await self._ip.run("netns", "attach", name, str(pid))
        return name

    def network_for(self, vip_address: str | None) -> DockerNetworkSettings:
        if vip_address is None:
            raise InfrastructureError("a distributor needs a VIP")
        return self._driver.vip_network_for(vip_address)

    async def gateway(self, network: str) -> str:
        """The configured gateway, else docker's choice (the subnet's first address)."""
        settings = self._driver.vip_network(network)
        return settings.gateway or str(ipaddress.ip_network(settings.subnet)[1])

    async def attach(
        self, network: str, namespace: str, address: str, address6: str | None = None
    ) -> str:
        """Plug ``namespace`` into the network's bridge as ``eth0`` with ``address`` (IPv4:
        ``address6`` is refused); returns the bridge port's name."""
        if address6 is not None:
            raise InfrastructureError("docker distributor namespaces take IPv4 addresses only")
        prefix = ipaddress.ip_network(self._driver.vip_network(network).subnet).prefixlen
        bridge = await self._driver.bridge(network)
        port = "q" + hashlib.sha256(namespace.encode()).hexdigest()[:12]
        await self._ip.run("link", "del", port, check=False)
        await self._ip.run(
            "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace
        )
        await self._ip.run("link", "set", port, "master", bridge, "up")
        await self._ip.run("-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
        await self._ip.run("-n", namespace, "link", "set", "eth0", "up")
        await self._ip.run("-n", namespace, "link", "set", "lo", "up")
        return port


def _same_namespace(name: str, pid: int) -> bool:
    """Whether the named namespace is the one process ``pid`` runs in."""
    try:
        named = os.stat(f"/run/netns/{name}")
        running = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (running.st_dev, running.st_ino)


def _certificate_archive(ca_pem: bytes, issued: IssuedCertificate) -> bytes:
    """A tar of ca.pem, server.pem and server.key (0600) for put_archive."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in (
            ("ca.pem", ca_pem, 0o644),
            ("server.pem", issued.cert_pem, 0o644),
            ("server.key", issued.key_pem, 0o600),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _check_unix_socket(host: str) -> None:
    """Connect once to a unix-socket engine (the SDK leaks the socket of a failed connect)."""
    if not host.startswith("unix://"):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5.0)
        try:
            probe.connect(host.removeprefix("unix://"))
        except OSError as exc:
            raise InfrastructureError(f"docker: engine at {host} unreachable: {exc}") from exc
