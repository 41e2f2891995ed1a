"""A lab for the netns driver, shared by the tests and bench/bench_failover.py: a network per
run, a client namespace on its bridge (HTTP backends and the prober run there), and teardown
of everything named after the run's tag.

A run with tag ``T`` owns the network ``tT`` (its namespace and the host end of its uplink are
``fn-tT``), the amphora namespaces ``ftT-...``, the client ``fcT``, and a /24 of
198.18.96.0/19 that no route of the host uses. Needs root, iproute2, keepalived and haproxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

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


def _used_subnets() -> list[ipaddress.IPv4Network]:
    text = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            network = ipaddress.IPv4Network(line.split()[0], strict=False)
            if network.prefixlen > 0:
                used.append(network)
    return used


def pick_subnet() -> ipaddress.IPv4Network:
    """A /24 in 198.18.96.0/19 that overlaps no route of the host."""
    used = _used_subnets()
    candidates = [
        s
        for s in ipaddress.IPv4Network("198.18.96.0/19").subnets(new_prefix=24)
        if not any(s.overlaps(u) for u in used)
    ]
    return random.choice(candidates)


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


def host_addresses(namespace: str) -> list[str]:
    """The /32 addresses (VIPs) on the amphora's eth0."""
    out = subprocess.run(
        ["ip", "-n", namespace, "-4", "-o", "addr", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
    ).stdout
    return [f.split("/")[0] for f in out.split() if f.endswith("/32")]


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

    @classmethod
    def create(cls) -> NetnsLab:
        tag = secrets.token_hex(2)
        subnet = pick_subnet()
        network = NetnsNetworkSettings(
            name=f"t{tag}",
            subnet=str(subnet),
            gateway=str(subnet.network_address + 1),
            ip_range=f"{subnet.network_address}/25",
        )
        settings = NetnsDriverSettings(
            namespace_prefix=f"ft{tag}-", network_prefix="fn-", networks=[network]
        )
        return cls(tag, subnet, network, settings, client_ns=f"fc{tag}")

    def host(self, index: int) -> str:
        return str(self.subnet.network_address + index)

    @property
    def client_ip(self) -> str:
        return self.host(250)

    def vip(self, index: int = 0) -> str:
        """VIPs from .200 up: outside the amphora range (.0/25) and the client (.250)."""
        return self.host(200 + index)

    async def attach_client(self, driver: NetnsAmphoraDriver) -> None:
        """Create the network (kept until ``cleanup``) and the client namespace on it."""
        await driver.prepare_network(self.network.name)
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", self.client_ns], check=True)
        await driver.attach(self.network.name, self.client_ns, self.client_ip)

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

    def start_backends(self, names: list[str], first_port: int = 8081) -> list[int]:
        """HTTP backends in the client namespace answering their names; returns their ports."""
        ports = [first_port + i for i in range(len(names))]
        argv = [PYTHON, "-m", TOOLS, "serve", "--address", self.client_ip]
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

    def http_lb(self, vip: str, ports: list[int], topology: Topology) -> c.CreateLoadBalancer:
        """An HTTP LB on ``vip``:80 whose members are the client namespace's backends."""
        lb = b.loadbalancer(vip, topology=topology)
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
