"""A distributor on a lab's network, shared by tests/integration/netns/test_distributor.py and
bench/bench_distribution.py: the network and the client namespace, one distributor owning
the lab's VIP, and amphora namespaces behind it each running a server of the caller's.

Every namespace is named after the lab's tag, so ``NetnsLab.cleanup`` removes it; the
processes started here join ``lab.processes`` and die there too.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from services.provisioner.adapters.netns_distributor import DistributorLayout, NetnsDistributor
from services.provisioner.adapters.netns_network import Attachment, NetnsNetwork
from tests.integration.netns.lab import PYTHON, REPO, NetnsLab

TOOLS: Final = "tests.integration.netns.distributor_tools"
PORT: Final = 80
# The links live only inside the distributor's and the amphorae's namespaces.
LINKS: Final = "198.19.254.0/24"


@dataclass
class DistributorRig:
    lab: NetnsLab
    network: NetnsNetwork
    distributor: NetnsDistributor

    def amphora_ns(self, name: str) -> str:
        return f"ft{self.lab.tag}-{name}"

    async def start_amphora(
        self, name: str, index: int, server: Sequence[str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Amphora namespace ``name`` on the bridge (eth0 with its own address, like the
        driver's), wired behind the distributor but not serving, running ``server`` (by
        default a server answering ``name`` on the VIP's port; it must print ``ready``, or
        nothing when ``server`` is given and it is ready once started)."""
        ns = self.amphora_ns(name)
        attachment = Attachment(
            ns, f"v{self.lab.tag}{name}", self.lab.network.name, self.lab.host(10 + index)
        )
        await self.network.plug(attachment)
        await self.distributor.add(ns)
        argv = list(server) if server is not None else [
            PYTHON, "-m", TOOLS, "serve", "--address", self.lab.vip(),
            "--port", str(PORT), "--name", name,
        ]  # fmt: skip
        return self._run_in(ns, argv, announces_ready=server is None)

    def _run_in(
        self, namespace: str, argv: list[str], *, announces_ready: bool
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
        )  # fmt: skip
        self.lab.processes.append(proc)
        if announces_ready:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()
            assert line == "ready", f"the server in {namespace} did not start: {line}"
        return proc

    def client(self, *argv: str, timeout: float = 60.0) -> str:
        """A program in the client namespace, to completion; its stdout."""
        result = subprocess.run(
            ["ip", "netns", "exec", self.lab.client_ns, *argv],
            capture_output=True, text=True, timeout=timeout, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def spread(self, count: int, *, udp: bool = False) -> Counter[str]:
        """``count`` new connections (UDP: datagrams from new sockets) to the VIP; answers."""
        out = self.client(
            PYTHON, "-m", TOOLS, "spread", "--host", self.lab.vip(), "--port", str(PORT),
            "--count", str(count), *(["--udp"] if udp else []),
        )  # fmt: skip
        return Counter({str(k): int(v) for k, v in json.loads(out).items()})


@asynccontextmanager
async def distributor_rig(lab: NetnsLab, state_dir: Path) -> AsyncIterator[DistributorRig]:
    """The lab's network with its client namespace and a distributor holding ``lab.vip()``;
    the distributor and the network are removed afterwards (the rest by ``lab.cleanup``)."""
    network = NetnsNetwork(lab.driver_settings, state_dir)
    layout = DistributorLayout(
        namespace=f"ft{lab.tag}-dist", network=lab.network.name, vip=lab.vip(), links=LINKS,
        seed=secrets.randbits(32),
    )  # fmt: skip
    distributor = NetnsDistributor(network, layout)
    try:
        await network.prepare_network(lab.network.name)
        subprocess.run(["ip", "netns", "add", lab.client_ns], check=True)
        await network.attach(lab.network.name, lab.client_ns, lab.client_ip)
        await distributor.create()
        yield DistributorRig(lab, network, distributor)
    finally:
        await distributor.delete()
        await network.remove_network(lab.network.name)
