"""The ``netns`` driver: an amphora is a network namespace running agent, HAProxy and keepalived.

Topology, per VIP network ``N`` (``NetnsDriverSettings.networks``; subnets in 198.18.0.0/15)::

    root namespace                 network namespace fn-N             amphora namespace fa-<id>
    fn-N (veth, <gateway>/24) ---- up0 --+
                                         br0 (bridge) --- v<id> ----- eth0 <address>/24
                                         |                              (+ VIP /32: SINGLE, or
                                         +--- v<id2> ---- eth0 ...        keepalived's MASTER)

- The bridge lives in a namespace of its own (``<network_prefix><name>``), so the host's
  firewall never sees bridged traffic (docker's ``FORWARD DROP`` with ``br_netfilter`` would
  drop it on a root-namespace bridge) and the host keeps no bridge.
- One veth, the uplink, joins the host to the bridge: its host end (named like the network
  namespace) holds ``gateway``. Through it the provisioner reaches every agent at
  ``https://<amphora address>:<agent_port>`` (mutual TLS, the agent's certificate names the
  amphora id and that address), and amphorae reach the host (their default route), e.g. a
  health service listening on the gateway address.
- Each amphora gets its own namespace ``<namespace_prefix><first 12 hex of its id>`` with one
  interface, ``eth0``, addressed from the network's ``ip_range`` (round robin, so an address
  comes back only after the whole range; the host's ARP entry for it is dropped whenever an
  amphora there is made or deleted, and the agent announces its address at start, so no
  neighbour keeps a deleted amphora's MAC). ``ip_nonlocal_bind`` is on so a BACKUP's HAProxy
  binds the VIP it does not hold. The agent is forked from the pre-imported zygote (the
  process driver's, ~0.1 s instead of ~1 s for a new Python) or started as a new Python, and
  moves itself into the namespace first thing (``FULCRUM_AMPHORA_NETNS``); HAProxy and
  keepalived are its children. It runs with ``FULCRUM_AMPHORA_VIP_INTERFACE=eth0``: VIPs are
  plugged by the agent when the configurator asks (SINGLE: added with gratuitous ARP;
  ACTIVE_STANDBY: moved by keepalived), not by this driver.

State: ``<state_dir>/<amphora_id>/amphora.json`` (LB, role, network, address, namespace, cert
expiry) beside the agent's files; ``<state_dir>/.networks/<name>.json`` marks a network
namespace this driver created (deleted with its last amphora) or was told to keep, and
``<name>.last`` the last address handed out. ``list`` reports amphorae whose state file,
namespace and agent process all exist. Address allocation and network changes hold a lock (an
flock on ``<state_dir>/.lock``), so several provisioners on one host share a state dir safely.
Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2; keepalived for ACTIVE_STANDBY.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from libs.common.errors import InfrastructureError
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec
from services.provisioner.drivers.process import Zygote
from services.provisioner.settings import NetnsDriverSettings, NetnsNetworkSettings

__all__ = ["DRIVER_NAME", "VIP_INTERFACE", "NetnsAmphoraDriver"]

log = logging.getLogger(__name__)

DRIVER_NAME: Final = "netns"
VIP_INTERFACE: Final = "eth0"
_BRIDGE: Final = "br0"
_UPLINK_INSIDE: Final = "up0"
_RECORD_FILE: Final = "amphora.json"
_PID_FILE: Final = "agent.pid"
_PORT_FILE: Final = "agent.port"
_NETWORKS_DIR: Final = ".networks"
_LOCK_FILE: Final = ".lock"
_NETNS_DIR: Final = Path("/run/netns")
_POLL: Final = 0.02


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


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def namespace_exists(name: str) -> bool:
    return (_NETNS_DIR / name).exists()


class _IpRoute:
    """iproute2, bounded in time; failures become InfrastructureError."""

    def __init__(self, timeout: float) -> None:
        self._ip = shutil.which("ip") or "/usr/sbin/ip"
        self._timeout = timeout

    async def run(self, *args: str, check: bool = True) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            self._ip,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise InfrastructureError(f"ip {' '.join(args)} timed out") from None
        text = out.decode(errors="replace").strip()
        status = process.returncode or 0
        if check and status != 0:
            raise InfrastructureError(f"ip {' '.join(args)} failed: {text}")
        return status, text

    async def link_exists(self, name: str, namespace: str | None = None) -> bool:
        where = ("-n", namespace) if namespace else ()
        status, _ = await self.run(*where, "link", "show", "dev", name, check=False)
        return status == 0

    async def pids(self, namespace: str) -> list[int]:
        if not namespace_exists(namespace):
            return []
        status, text = await self.run("netns", "pids", namespace, check=False)
        return [int(p) for p in text.split() if p.isdigit()] if status == 0 else []


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
    ) -> None:
        self._settings = settings
        self._state_dir = state_dir.resolve()
        self._ca = ca
        self._agent_env = agent_env or {}
        self._boot_timeout = boot_timeout
        self._validity = cert_validity_days
        self._ip = _IpRoute(settings.command_timeout)
        self._zygote = Zygote(self._state_dir) if fast_spawn else None
        self._lock = asyncio.Lock()
        self._state_dir.mkdir(parents=True, exist_ok=True)
        (self._state_dir / _NETWORKS_DIR).mkdir(exist_ok=True)

    # -- names -------------------------------------------------------------------------------

    @staticmethod
    def _short(amphora_id: str) -> str:
        return amphora_id.replace("-", "").lower()[:12]

    def namespace_for(self, amphora_id: str) -> str:
        return f"{self._settings.namespace_prefix}{self._short(amphora_id)}"

    def network_namespace(self, network: str) -> str:
        """The namespace holding the network's bridge; the host end of its uplink has the
        same name."""
        return f"{self._settings.network_prefix}{network}"

    def network_for(self, vip_address: str | None) -> NetnsNetworkSettings:
        """The network whose subnet holds ``vip_address`` (the first network for none)."""
        networks = self._settings.networks
        if vip_address is None:
            return networks[0]
        address = ipaddress.ip_address(vip_address)
        for network in networks:
            if address in ipaddress.ip_network(network.subnet):
                return network
        subnets = ", ".join(n.subnet for n in networks)
        raise InfrastructureError(f"VIP {vip_address} is in none of the netns subnets {subnets}")

    def _network(self, name: str) -> NetnsNetworkSettings:
        for network in self._settings.networks:
            if network.name == name:
                return network
        raise InfrastructureError(f"netns network {name!r} is not configured")

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

    def _agent_pid(self, amphora_id: str) -> int | None:
        try:
            pid = int((self._dir(amphora_id) / _PID_FILE).read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _handle(self, amphora_id: str) -> AmphoraHandle | None:
        record = self._record(amphora_id)
        if record is None or not namespace_exists(record.namespace):
            return None
        if self._agent_pid(amphora_id) is None:
            return None
        try:
            port = int((self._dir(amphora_id) / _PORT_FILE).read_text())
        except (OSError, ValueError):
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
        )

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """Serializes address allocation and network changes, across processes too."""
        async with self._lock:
            fd = os.open(self._state_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    # -- networks ----------------------------------------------------------------------------

    def _network_marker(self, name: str) -> Path:
        return self._state_dir / _NETWORKS_DIR / f"{name}.json"

    async def prepare_network(self, name: str) -> None:
        """Create (or repair) network ``name`` and keep it after its last amphora is gone
        (operators, tests). Remove it with ``remove_network``."""
        async with self._locked():
            await self._ensure_network(self._network(name), keep=True)

    async def _ensure_network(self, network: NetnsNetworkSettings, *, keep: bool) -> None:
        """Idempotent: every piece is checked and made when missing."""
        ns = self.network_namespace(network.name)
        marker = self._network_marker(network.name)
        if not namespace_exists(ns):
            await self._ip.run("netns", "add", ns)
            marker.write_text(json.dumps({"keep": keep}))
        elif keep and marker.exists():
            marker.write_text(json.dumps({"keep": True}))
        # (A namespace found without a marker was made by someone else: never deleted here.)
        await self._ip.run("-n", ns, "link", "set", "lo", "up")
        if not await self._ip.link_exists(_BRIDGE, ns):
            await self._ip.run("-n", ns, "link", "add", _BRIDGE, "type", "bridge")
        await self._ip.run("-n", ns, "link", "set", _BRIDGE, "up")
        if not await self._ip.link_exists(ns):
            if await self._ip.link_exists(_UPLINK_INSIDE, ns):
                await self._ip.run("-n", ns, "link", "del", _UPLINK_INSIDE)
            await self._ip.run(
                "link", "add", ns, "type", "veth", "peer", "name", _UPLINK_INSIDE, "netns", ns
            )
        await self._ip.run("-n", ns, "link", "set", _UPLINK_INSIDE, "master", _BRIDGE, "up")
        prefix = ipaddress.ip_network(network.subnet).prefixlen
        await self._ip.run("addr", "replace", f"{network.gateway}/{prefix}", "dev", ns)
        await self._ip.run("link", "set", ns, "up")

    async def remove_network(self, name: str) -> None:
        """Delete the network's namespace (bridge, ports) and uplink; absent is fine."""
        async with self._locked():
            await self._remove_network(name)

    async def _remove_network(self, name: str) -> None:
        ns = self.network_namespace(name)
        if await self._ip.link_exists(ns):
            await self._ip.run("link", "del", ns, check=False)
        if namespace_exists(ns):
            await self._ip.run("netns", "del", ns, check=False)
        self._network_marker(name).unlink(missing_ok=True)

    async def _release_network_if_unused(self, name: str) -> None:
        try:
            keep = bool(json.loads(self._network_marker(name).read_text()).get("keep", True))
        except (OSError, ValueError):
            return  # no marker: not created by this driver
        if keep or any(r.network == name for r in self._records()):
            return
        await self._remove_network(name)

    async def attach(self, network: str, namespace: str, address: str) -> str:
        """Plug an existing namespace (a client, a member) into ``network`` as ``eth0`` with
        ``address``; returns the bridge port's name. For tests and operators: the address must
        lie outside the network's ``ip_range``. Deleting the namespace unplugs it."""
        settings = self._network(network)
        ns = self.network_namespace(network)
        port = "p" + hashlib.sha256(namespace.encode()).hexdigest()[:12]
        prefix = ipaddress.ip_network(settings.subnet).prefixlen
        await self._ip.run(
            "-n", ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
            namespace,
        )  # fmt: skip
        await self._ip.run("-n", ns, "link", "set", port, "master", _BRIDGE, "up")
        await self._ip.run("-n", namespace, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
        await self._ip.run("-n", namespace, "link", "set", "eth0", "up")
        await self._ip.run("-n", namespace, "link", "set", "lo", "up")
        return port

    # -- amphorae ----------------------------------------------------------------------------

    def _allocate(self, network: NetnsNetworkSettings) -> str:
        """The next free address of ``ip_range`` after the last one handed out (round robin):
        an address comes back only after the whole range, long after neighbours forgot the
        MAC of the amphora that had it before. Called under the lock."""
        subnet = ipaddress.ip_network(network.subnet)
        taken = {r.address for r in self._records()} | {network.gateway}
        reserved = {subnet.network_address, subnet.broadcast_address}
        hosts = [
            str(h)
            for h in ipaddress.ip_network(network.ip_range)
            if h not in reserved and str(h) not in taken
        ]
        if not hosts:
            raise InfrastructureError(f"no free amphora address left in {network.ip_range}")
        cursor = self._state_dir / _NETWORKS_DIR / f"{network.name}.last"
        try:
            last = ipaddress.IPv4Address(cursor.read_text().strip())
        except (OSError, ValueError):
            last = None
        after = [h for h in hosts if last is None or ipaddress.IPv4Address(h) > last]
        chosen = (after or hosts)[0]
        cursor.write_text(chosen)
        return chosen

    async def _forget_neighbour(self, record: AmphoraRecord) -> None:
        """Drop the host's ARP entry for the amphora's address: a new amphora there has
        another MAC, and a stale entry would black-hole the provisioner's connections."""
        uplink = self.network_namespace(record.network)
        await self._ip.run("neigh", "del", record.address, "dev", uplink, check=False)

    async def _plumb(self, record: AmphoraRecord, network: NetnsNetworkSettings) -> None:
        """The amphora's namespace with eth0 on the bridge (recreated from scratch)."""
        ns, bridge_ns = record.namespace, self.network_namespace(network.name)
        await self._ip.run("-n", bridge_ns, "link", "del", record.port_name, check=False)
        if namespace_exists(ns):
            await self._ip.run("netns", "del", ns, check=False)
        await self._ip.run("netns", "add", ns)
        await self._ip.run(
            "-n", bridge_ns, "link", "add", record.port_name, "type", "veth",
            "peer", "name", VIP_INTERFACE, "netns", ns,
        )  # fmt: skip
        await self._ip.run("-n", bridge_ns, "link", "set", record.port_name, "master", _BRIDGE)
        await self._ip.run("-n", bridge_ns, "link", "set", record.port_name, "up")
        prefix = ipaddress.ip_network(network.subnet).prefixlen
        # A BACKUP's HAProxy binds the VIP before keepalived gives it the address.
        await self._ip.run("netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")
        await self._ip.run("-n", ns, "link", "set", "lo", "up")
        await self._ip.run("-n", ns, "addr", "add", f"{record.address}/{prefix}", "dev", "eth0")
        await self._ip.run("-n", ns, "link", "set", VIP_INTERFACE, "up")
        await self._ip.run("-n", ns, "route", "add", "default", "via", network.gateway)
        await self._forget_neighbour(record)

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        """Start the amphora unless it runs already; waits until its agent listens."""
        existing = self._handle(spec.amphora_id)
        if existing is not None:
            return existing
        network = self.network_for(spec.vip_address)
        directory = self._dir(spec.amphora_id)
        started = time.monotonic()
        try:
            async with self._locked():
                await self._stop_and_unplug(self._record(spec.amphora_id))
                await self._ensure_network(network, keep=False)
                short = self._short(spec.amphora_id)
                record = AmphoraRecord(
                    amphora_id=spec.amphora_id,
                    lb_id=spec.lb_id,
                    role=spec.role,
                    topology=spec.topology,
                    network=network.name,
                    address=self._allocate(network),
                    namespace=self.namespace_for(spec.amphora_id),
                    port_name=f"v{short}",
                )
                directory.mkdir(parents=True, exist_ok=True)
                (directory / _PORT_FILE).unlink(missing_ok=True)
                self._write_record(record)
                await self._plumb(record, network)
            issued = self._ca.issue_server_cert(
                spec.amphora_id, [spec.amphora_id, record.address], self._validity
            )
            write_private_file(directory / "server.pem", issued.cert_pem, mode=0o644)
            write_private_file(directory / "server.key", issued.key_pem)
            record = AmphoraRecord(
                **(asdict(record) | {"cert_expiration": issued.not_after.isoformat()})
            )
            self._write_record(record)
            handle = await self._boot(record)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.delete(spec.amphora_id)
            raise
        log.info(
            "amphora %s up in %s at %s (%.2f s)",
            spec.amphora_id,
            record.namespace,
            record.address,
            time.monotonic() - started,
        )
        return handle

    def _write_record(self, record: AmphoraRecord) -> None:
        path = self._dir(record.amphora_id) / _RECORD_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(record)))
        os.replace(temporary, path)

    async def _boot(self, record: AmphoraRecord) -> AmphoraHandle:
        directory = self._dir(record.amphora_id)
        env = {
            **self._agent_env,
            "FULCRUM_AMPHORA_AMPHORA_ID": record.amphora_id,
            "FULCRUM_AMPHORA_LB_ID": record.lb_id or "",
            "FULCRUM_AMPHORA_BIND_HOST": record.address,
            "FULCRUM_AMPHORA_BIND_PORT": str(self._settings.agent_port),
            "FULCRUM_AMPHORA_STATE_DIR": str(directory),
            "FULCRUM_AMPHORA_CA_CERT": str(self._ca.cert_path),
            "FULCRUM_AMPHORA_SERVER_CERT": str(directory / "server.pem"),
            "FULCRUM_AMPHORA_SERVER_KEY": str(directory / "server.key"),
            "FULCRUM_AMPHORA_VIP_INTERFACE": VIP_INTERFACE,
            # The agent moves itself into its namespace first thing (adapters/netns.py).
            "FULCRUM_AMPHORA_NETNS": record.namespace,
        }
        pid = await self._spawn(env, directory / "agent.log")
        # The agent writes agent.pid itself, once it holds the amphora's agent lock.
        deadline = time.monotonic() + self._boot_timeout
        while time.monotonic() < deadline:
            handle = self._handle(record.amphora_id)
            if handle is not None:
                return handle
            if not _alive(pid) and self._agent_pid(record.amphora_id) is None:
                break  # it died, and no earlier agent of this amphora runs either
            await asyncio.sleep(_POLL)
        tail = (directory / "agent.log").read_text(errors="replace")[-2000:]
        raise InfrastructureError(f"amphora {record.amphora_id} did not start: {tail.strip()}")

    async def _spawn(self, env: dict[str, str], log_path: Path) -> int:
        """Fork the agent from the pre-imported zygote (milliseconds), else start a Python."""
        if self._zygote is not None:
            try:
                return await self._zygote.spawn(env, log_path)
            except OSError as exc:
                log.warning("zygote unavailable (%s); plain start", exc)
        with open(log_path, "ab") as out:  # noqa: ASYNC230 (local, instant)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.amphora",
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        return proc.pid

    async def prepare(self) -> None:
        """Start the zygote now, so that the first amphora boots fast too."""
        if self._zygote is not None:
            try:
                await self._zygote.ensure_running()
            except OSError as exc:
                log.warning("zygote unavailable (%s)", exc)

    async def close(self) -> None:
        """Stop the zygote (the amphorae keep running) and wait, bounded, until it is gone."""
        if self._zygote is None:
            return
        try:
            pid: int | None = int((self._state_dir / ".zygote" / "zygote.pid").read_text())
        except (OSError, ValueError):
            pid = None
        self._zygote.stop()
        for _ in range(100):
            if pid is None or not _alive(pid):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # lets the loop's child watcher record its exit

    async def _stop_and_unplug(self, record: AmphoraRecord | None) -> None:
        """Stop everything in the amphora's namespace and remove it; absent is fine."""
        if record is None:
            return
        pid = self._agent_pid(record.amphora_id)
        if pid is not None:
            # The agent stops keepalived (which drops the VIP, so its peer takes over at
            # once) and HAProxy.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self._settings.stop_timeout
            while time.monotonic() < deadline:
                if not _alive(pid):
                    break
                await asyncio.sleep(_POLL)
        deadline = time.monotonic() + self._settings.stop_timeout
        while time.monotonic() < deadline:
            remaining = await self._ip.pids(record.namespace)
            if not remaining:
                break
            for target in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(target, signal.SIGKILL)
            await asyncio.sleep(_POLL)
        bridge_ns = self.network_namespace(record.network)
        if namespace_exists(bridge_ns):
            await self._ip.run("-n", bridge_ns, "link", "del", record.port_name, check=False)
        if namespace_exists(record.namespace):
            await self._ip.run("netns", "del", record.namespace, check=False)
        await self._forget_neighbour(record)

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
            async with self._locked():
                await self._release_network_if_unused(record.network)
            log.info("amphora %s deleted (%.2f s)", amphora_id, time.monotonic() - started)

    async def list(self) -> list[AmphoraHandle]:
        handles = []
        for record in self._records():
            handle = self._handle(record.amphora_id)
            if handle is not None:
                handles.append(handle)
        return handles

    async def leftovers(self) -> Sequence[str]:
        return [r.amphora_id for r in self._records() if self._handle(r.amphora_id) is None]
