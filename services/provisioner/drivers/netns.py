"""The ``netns`` driver: an amphora is a network namespace running agent, HAProxy and keepalived.

Each amphora gets its own namespace on the bridge of the VIP network whose subnet holds its
VIP (the plumbing, the addresses and the topology are in adapters/netns_network.py). The
provisioner reaches its agent at ``https://<amphora address>:<agent_port>`` (mutual TLS, the
agent's certificate names the amphora id and that address). The agent is started by the
shared agent launcher (drivers/agent_launcher.py: forked by the zygote, or a new Python) and
moves itself into the namespace first thing (``FULCRUM_AMPHORA_NETNS``); HAProxy and
keepalived are its children. It runs with ``FULCRUM_AMPHORA_VIP_INTERFACE=eth0``: VIPs are
plugged by the agent when the configurator asks (SINGLE: added with gratuitous ARP;
ACTIVE_STANDBY: moved by keepalived), not by this driver. On an amphora host (``host``, one
driver per host behind drivers/hosts.py) the amphorae plug into the host's own bridge, joined
to the network's switch by the host's uplink; ``reachable`` says whether that uplink is up.
ACTIVE_ACTIVE load balancers (a single host only) get a distributor namespace owning their
VIP (``distribution``: adapters/netns_distributor.py); their amphorae hold the VIP on ``lo``.

State: ``<state_dir>/<amphora_id>/amphora.json`` (LB, role, network, address, namespace, cert
expiry) beside the agent's files. ``list`` reports amphorae whose state file, namespace and
agent process all exist. A network made for an amphora goes with its last amphora.
Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2; keepalived for ACTIVE_STANDBY.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from libs.common.errors import InfrastructureError
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.adapters.netns_distributor import NetnsDistributors
from services.provisioner.adapters.netns_network import (
    VIP_INTERFACE,
    Attachment,
    HostPlacement,
    NetnsNetwork,
    namespace_exists,
)
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec, Leftovers
from services.provisioner.drivers.agent_launcher import (
    PORT_FILE,
    AgentLauncher,
    agent_environment,
    agent_pid,
    agent_port,
    stop_agent,
)
from services.provisioner.settings import NetnsDriverSettings, NetnsNetworkSettings

__all__ = ["DRIVER_NAME", "VIP_INTERFACE", "NetnsAmphoraDriver", "namespace_exists"]

log = logging.getLogger(__name__)

DRIVER_NAME: Final = "netns"
_RECORD_FILE: Final = "amphora.json"


@dataclass(frozen=True)
class AmphoraRecord:
    """What the driver remembers of one amphora (``amphora.json``)."""

    amphora_id: str
    lb_id: str | None
    role: str
    topology: str
    network: str
    address: str
    namespace: str
    port_name: str
    cert_expiration: str | None = None

    @property
    def attachment(self) -> Attachment:
        return Attachment(self.namespace, self.port_name, self.network, self.address)


class NetnsAmphoraDriver:
    """Amphorae in network namespaces on this host, bridged per VIP network (see above)."""

    name = DRIVER_NAME

    def __init__(
        self,
        settings: NetnsDriverSettings,
        state_dir: Path,
        ca: DeploymentCA,
        agent_env: dict[str, str] | None = None,
        boot_timeout: float = 20.0,
        cert_validity_days: int = 30,
        fast_spawn: bool = True,
        host: HostPlacement | None = None,
    ) -> None:
        self._settings = settings
        self._state_dir = state_dir.resolve()
        self._ca = ca
        self._validity = cert_validity_days
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self.network = NetnsNetwork(settings, self._state_dir, host)
        # ACTIVE_ACTIVE load balancers' distributors (on a single host only).
        self.distribution = (
            NetnsDistributors(
                self.network,
                settings.namespace_prefix,
                settings.distributor_links,
                settings.command_timeout,
            )
            if host is None
            else None
        )
        self._launcher = AgentLauncher(
            self._state_dir,
            boot_timeout=boot_timeout,
            agent_env=agent_env,
            fast_spawn=fast_spawn,
        )

    # -- the network, for operators and tests ----------------------------------------------

    def namespace_for(self, amphora_id: str) -> str:
        return self.network.namespace_for(amphora_id)

    def network_namespace(self, network: str) -> str:
        return self.network.network_namespace(network)

    def bridge_namespace(self, network: str) -> str:
        return self.network.bridge_namespace(network)

    async def reachable(self) -> bool:
        """Whether its amphorae can be reached (an amphora host's uplinks are up)."""
        return await self.network.reachable()

    async def prepare_network(self, name: str) -> None:
        await self.network.prepare_network(name)

    async def remove_network(self, name: str) -> None:
        await self.network.remove_network(name)

    async def attach(
        self, network: str, namespace: str, address: str, address6: str | None = None
    ) -> str:
        return await self.network.attach(network, namespace, address, address6)

    # -- state -------------------------------------------------------------------------------

    def _dir(self, amphora_id: str) -> Path:
        return self._state_dir / amphora_id

    def _record(self, amphora_id: str) -> AmphoraRecord | None:
        try:
            data = json.loads((self._dir(amphora_id) / _RECORD_FILE).read_text())
            return AmphoraRecord(**data)
        except (OSError, ValueError, TypeError):
            return None

    def _records(self) -> list[AmphoraRecord]:
        records = []
        for directory in sorted(self._state_dir.iterdir()):
            if directory.is_dir() and not directory.name.startswith("."):
                record = self._record(directory.name)
                if record is not None:
                    records.append(record)
        return records

    def _handle(self, amphora_id: str) -> AmphoraHandle | None:
        record = self._record(amphora_id)
        if record is None or not namespace_exists(record.namespace):
            return None
        directory = self._dir(amphora_id)
        port = agent_port(directory)
        if agent_pid(directory) is None or port is None:
            return None
        return AmphoraHandle(
            amphora_id=amphora_id,
            lb_id=record.lb_id,
            driver=DRIVER_NAME,
            compute_id=record.namespace,
            agent_url=f"https://{record.address}:{port}",
            lb_network_ip=record.address,
            cert_expiration=record.cert_expiration,
            role=record.role,
            lb_network_ip6=self._network6_address(record),
        )

    def _network6_address(self, record: AmphoraRecord) -> str | None:
        try:
            return self.network.network(record.network).address6_of(record.address)
        except InfrastructureError:  # a network no longer configured
            return None

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        """Start the amphora unless it runs already; waits until its agent listens."""
        existing = self._handle(spec.amphora_id)
        if existing is not None:
            return existing
        network = self.network.network_for(spec.vip_address)
        directory = self._dir(spec.amphora_id)
        started = time.monotonic()
        try:
            async with self.network.locked():
                await self._stop_and_unplug(self._record(spec.amphora_id))
                await self.network.ensure_network(network, keep=False)
                record = self._new_record(spec, network)
                directory.mkdir(parents=True, exist_ok=True)
                (directory / PORT_FILE).unlink(missing_ok=True)
                self._write_record(record)
                await self.network.plug(record.attachment)
            issued = self._ca.issue_server_cert(
                spec.amphora_id, [spec.amphora_id, record.address], self._validity
            )
            cert, key = directory / "server.pem", directory / "server.key"
            write_private_file(cert, issued.cert_pem, mode=0o644, durable=False)
            write_private_file(key, issued.key_pem, durable=False)
            record = AmphoraRecord(
                **(asdict(record) | {"cert_expiration": issued.not_after.isoformat()})
            )
            self._write_record(record)
            handle = await self._boot(record)
        except BaseException:
            try:
                await self.delete(spec.amphora_id)
            except Exception:
                log.exception("amphora %s: not removed after its boot failed", spec.amphora_id)
            raise
        log.info(
            "amphora %s up in %s at %s (%.2f s)",
            spec.amphora_id,
            record.namespace,
            record.address,
            time.monotonic() - started,
        )
        return handle

    def _new_record(self, spec: AmphoraSpec, network: NetnsNetworkSettings) -> AmphoraRecord:
        """The amphora's place: a free address of ``network``. Called under the lock."""
        return AmphoraRecord(
            amphora_id=spec.amphora_id,
            lb_id=spec.lb_id,
            role=spec.role,
            topology=spec.topology,
            network=network.name,
            address=self.network.allocate(network, {r.address for r in self._records()}),
            namespace=self.network.namespace_for(spec.amphora_id),
            port_name=self.network.port_for(spec.amphora_id),
        )

    def _write_record(self, record: AmphoraRecord) -> None:
        path = self._dir(record.amphora_id) / _RECORD_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(record)))
        os.replace(temporary, path)

    async def _boot(self, record: AmphoraRecord) -> AmphoraHandle:
        directory = self._dir(record.amphora_id)
        env = {
            **agent_environment(
                record.amphora_id,
                record.lb_id,
                directory,
                self._ca.cert_path,
                record.address,
                self._settings.agent_port,
            ),
            "FULCRUM_AMPHORA_VIP_INTERFACE": VIP_INTERFACE,
            # The agent enters its namespace first thing (services/amphora/adapters/netns.py).
            "FULCRUM_AMPHORA_NETNS": record.namespace,
        }
        return await self._launcher.launch(
            record.amphora_id, directory, env, lambda: self._handle(record.amphora_id)
        )

    async def prepare(self) -> None:
        """Start the zygote now, so that the first amphora boots fast too."""
        await self._launcher.prepare()

    async def close(self) -> None:
        """Stop the zygote (the amphorae keep running) and wait, bounded, until it is gone."""
        await self._launcher.close()

    async def _stop_and_unplug(self, record: AmphoraRecord | None) -> None:
        """Stop everything in the amphora's namespace and remove it; absent is fine. The
        agent stops keepalived (which drops the VIP, so its peer takes over at once) and
        HAProxy; what is left is killed with the namespace."""
        if record is None:
            return
        pid = agent_pid(self._dir(record.amphora_id))
        if pid is not None:
            await stop_agent(pid, self._settings.stop_timeout)
        await self.network.unplug(record.attachment)

    async def delete(self, amphora_id: str) -> None:
        """Stop the agent (SIGTERM, then SIGKILL for everything left in the namespace), remove
        the namespace, its veth and files; the network goes with its last amphora if this
        driver created it."""
        started = time.monotonic()
        record = self._record(amphora_id)
        await self._stop_and_unplug(record)
        directory = self._dir(amphora_id)
        if directory.exists():
            await asyncio.to_thread(shutil.rmtree, directory, True)
        if record is not None:
            async with self.network.locked():
                in_use = any(r.network == record.network for r in self._records())
                await self.network.release_network(record.network, in_use=in_use)
            log.info("amphora %s deleted (%.2f s)", amphora_id, time.monotonic() - started)

    def _walk(self) -> tuple[list[AmphoraHandle], dict[str, str | None]]:
        """The handles of the recorded amphorae that run, and the ids of those that do not
        with the LB each record names (``Leftovers``)."""
        handles: list[AmphoraHandle] = []
        left: dict[str, str | None] = {}
        for record in self._records():
            handle = self._handle(record.amphora_id)
            if handle is None:
                left[record.amphora_id] = record.lb_id
            else:
                handles.append(handle)
        return handles, left

    async def list(self) -> list[AmphoraHandle]:
        return self._walk()[0]

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        return next((h for h in await self.list() if h.amphora_id == amphora_id), None)

    async def leftovers(self) -> Sequence[str]:
        return list(self._walk()[1])

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        return self._walk()

    async def reachable_hosts(self) -> None:
        """One host: it sees every amphora it runs."""
        return None
