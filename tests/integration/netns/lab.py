"""A lab for the netns driver, shared by the tests and bench/bench_failover.py: a network per
run, a client namespace on its bridge (HTTP backends and the prober run there), and teardown
of everything named after the run's tag.

A run with tag ``T`` owns the network ``tT`` (its namespace and the host end of its uplink are
``fn-tT``), the amphora namespaces ``ftT-...``, the client ``fcT``, and a /24 of
198.18.96.0/19 that no route or address of the host uses, reserved (``reserved_subnets``: a lock
file per subnet) until ``cleanup``: two labs started at once, by the two workers of one test
run or by runs in two checkouts, never share a subnet (they did: each found the same /24 free
before either's bridge came up, and the provisioner of one reached the other's agents). Needs
root, iproute2, keepalived and haproxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from deploy.local.dockerd import reserved_subnets
from libs.common.domain import commands as c
from libs.common.domain.model import Topology
from services.provisioner.drivers.netns import NetnsAmphoraDriver
from services.provisioner.settings import NetnsDriverSettings, NetnsNetworkSettings
from tests import builders as b
from tests.integration.netns.tools import Outage, Sample, outage

PYTHON = sys.executable
TOOLS = "tests.integration.netns.tools"
# `python -m tests...` in the client namespace resolves from the repository's root.
REPO: Final = Path(__file__).resolve().parents[3]


# The /24s a lab may take (reserved_subnets passes over those in use).
LAB_SUBNETS: Final = [
    str(subnet) for subnet in ipaddress.IPv4Network("198.18.96.0/19").subnets(new_prefix=24)
]


def pick_subnet6() -> ipaddress.IPv6Network:
    """A random /64 of the ULA range fd00::/8 that overlaps no IPv6 route of the host."""
    text = subprocess.run(["ip", "-6", "route"], capture_output=True, text=True).stdout
    used = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            network = ipaddress.IPv6Network(line.split()[0], strict=False)
            if network.prefixlen > 0:
                used.append(network)
    while True:
        prefix = (0xFD << 56 | secrets.randbits(56)) << 64
        candidate = ipaddress.IPv6Network((prefix, 64))
        if not any(candidate.overlaps(u) for u in used):
            return candidate


def namespaces() -> list[str]:
    text = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def kill_everything_in(namespace: str) -> int:
    """SIGKILL every process in ``namespace`` (for an amphora: agent, HAProxy, keepalived; its
    kernel state, the VIP included, stays as a crashed machine's would). Returns the count."""
    killed = 0
    for _ in range(100):
        out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        pids = [int(p) for p in out.stdout.split() if p.isdigit()]
        if not pids:
            return killed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.01)
    raise AssertionError(f"processes survive in {namespace}")


def host_addresses(namespace: str, family: str = "-4") -> list[str]:
    """The /32 addresses (VIPs) on the amphora's eth0; ``family="-6"``: the /128 ones."""
    out = subprocess.run(
        ["ip", "-n", namespace, family, "-o", "addr", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
    ).stdout
    host = "/32" if family == "-4" else "/128"
    return [f.split("/")[0] for f in out.split() if f.endswith(host)]


@dataclass
class Prober:
    """A prober process in the client namespace (one request every 10 ms)."""

    proc: subprocess.Popen[bytes]
    stop_file: Path
    out: Path

    async def finish(self, timeout: float = 30.0) -> list[Sample]:
        self.stop_file.touch()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert self.out.exists(), "prober wrote no samples"
        rows = json.loads(self.out.read_text())
        return [(float(r[0]), float(r[1]), bool(r[2]), str(r[3])) for r in rows]

    async def measure(self, since: float) -> Outage:
        return outage(await self.finish(), since)


@dataclass
class NetnsLab:
    tag: str
    subnet: ipaddress.IPv4Network
    network: NetnsNetworkSettings
    driver_settings: NetnsDriverSettings
    client_ns: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Holds the subnet's reservation until ``cleanup``.
    reservation: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @classmethod
    def create(cls, *, dual_stack: bool = False) -> NetnsLab:
        """A lab on a fresh /24; ``dual_stack`` adds a /64 of fd00::/8 to its network."""
        tag = secrets.token_hex(2)
        reservation = contextlib.ExitStack()
        (reserved,) = reservation.enter_context(
            reserved_subnets(secrets.SystemRandom().sample(LAB_SUBNETS, len(LAB_SUBNETS)), 1)
        )
        subnet = ipaddress.IPv4Network(reserved)
        subnet6 = pick_subnet6() if dual_stack else None
        network = NetnsNetworkSettings(
            name=f"t{tag}",
            subnet=str(subnet),
            gateway=str(subnet.network_address + 1),
            ip_range=f"{subnet.network_address}/25",
            subnet6=str(subnet6) if subnet6 else None,
            gateway6=str(subnet6.network_address + 1) if subnet6 else None,
        )
        settings = NetnsDriverSettings(
            namespace_prefix=f"ft{tag}-", network_prefix="fn-", networks=[network]
        )
        return cls(tag, subnet, network, settings, client_ns=f"fc{tag}", reservation=reservation)

    def host(self, index: int) -> str:
        return str(self.subnet.network_address + index)

    @property
    def client_ip(self) -> str:
        return self.host(250)

    @property
    def client_ip6(self) -> str | None:
        """The client's IPv6 address (dual stack only): the twin of ``client_ip``."""
        return self.network.address6_of(self.client_ip)

    def vip(self, index: int = 0) -> str:
        """VIPs from .200 up: outside the amphora range (.0/25) and the client (.250)."""
        return self.host(200 + index)

    def vip6(self, index: int = 0) -> str:
        """IPv6 VIPs (dual stack only) at the offsets of ``vip``: outside the amphorae's."""
        address = self.network.address6_of(self.vip(index))
        assert address is not None, "not a dual-stack lab"
        return address

    async def attach_client(self, driver: NetnsAmphoraDriver) -> None:
        """Create the network (kept until ``cleanup``) and the client namespace on it."""
        await driver.prepare_network(self.network.name)
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", self.client_ns], check=True)
        await driver.attach(self.network.name, self.client_ns, self.client_ip, self.client_ip6)

    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        """A process in the client namespace, killed at ``cleanup``."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.client_ns, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=REPO,
        )
        self.processes.append(proc)
        return proc

    def start_backends(
        self, names: list[str], first_port: int = 8081, address: str | None = None
    ) -> list[int]:
        """HTTP backends in the client namespace (on ``address``, by default the client's
        IPv4 address) answering their names; returns their ports."""
        ports = [first_port + i for i in range(len(names))]
        argv = [PYTHON, "-m", TOOLS, "serve", "--address", address or self.client_ip]
        for port, name in zip(ports, names, strict=True):
            argv += ["--port", str(port), "--name", name]
        proc = self.spawn(*argv)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        assert line == "ready", f"backends did not start: {line}"
        return ports

    def get(self, url: str, count: int = 10, timeout: float = 1.0) -> dict[str, int]:
        """``count`` requests from the client namespace; {body or "error:<why>": count}."""
        argv = ["get", "--url", url, "--count", str(count), "--timeout", str(timeout)]
        result = subprocess.run(
            ["ip", "netns", "exec", self.client_ns, PYTHON, "-m", TOOLS, *argv],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return {str(k): int(v) for k, v in json.loads(result.stdout).items()}

    async def wait_answers(self, url: str, timeout: float = 20.0) -> None:
        """Until one request from the client namespace gets a 200 (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = await asyncio.to_thread(self.get, url, 1, 0.5)
            if not any(k.startswith("error:") for k in seen):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} does not answer from the client: {seen}")
            await asyncio.sleep(0.1)

    def start_prober(self, url: str, directory: Path, max_seconds: float = 60.0) -> Prober:
        stop, out = directory / f"probe-{self.tag}.stop", directory / f"probe-{self.tag}.json"
        stop.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        proc = self.spawn(
            PYTHON, "-m", TOOLS, "probe", "--url", url, "--stop-file", str(stop),
            "--out", str(out), "--max-seconds", str(max_seconds),
        )  # fmt: skip
        return Prober(proc, stop, out)

    def http_lb(
        self, vip: str, ports: list[int], topology: Topology, **lb_fields: Any
    ) -> c.CreateLoadBalancer:
        """An HTTP LB on ``vip``:80 whose members are the client namespace's backends
        (``lb_fields``: more fields of the LB, say ``amphora_bounds``)."""
        lb = b.loadbalancer(vip, topology=topology, **lb_fields)
        pool = b.pool(lb)
        listener = b.listener(lb, 80, default_pool_id=pool.id)
        members = tuple(b.member(pool, port, address=self.client_ip) for port in ports)
        return c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)

    def leftovers(self) -> list[str]:
        """Namespaces and host links of this run that still exist."""
        found = [n for n in namespaces() if self.tag in n]
        uplink = f"fn-t{self.tag}"
        if subprocess.run(["ip", "link", "show", uplink], capture_output=True).returncode == 0:
            found.append(uplink)
        return found

    def cleanup(self) -> None:
        """Kill this run's processes and delete its namespaces and uplink (idempotent)."""
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        self.processes.clear()
        mine = (f"ft{self.tag}-", self.client_ns, f"fn-t{self.tag}")
        for name in namespaces():
            if name.startswith(mine):
                kill_everything_in(name)
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", f"fn-t{self.tag}"], capture_output=True)
        self.reservation.close()
