"""Amphora hosts of the cluster stack (``fulcrum up --cluster --amphora-hosts N``): N netns
hosts, each with a bridge of its own, joined by their uplinks to one switch.

One VIP network per stack, ``198.19.<octet>.0/24`` (inside 198.18.0.0/15; ``<octet>`` is the
stack's VIP octet, so stacks side by side never share one): the switch namespace
``f<octet>-vip`` holds the bridge, the host end of its uplink holds the gateway ``.1``, where
both health replicas receive heartbeats and the LBs' members may listen; amphorae take their
addresses from ``.0/25`` (split between the hosts), VIPs come from ``.130-.250``. ``prepare``
makes the switch before the services start (health binds the gateway); ``remove`` deletes
every namespace of the stack (its processes killed first) and the uplink. Needs root.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from deploy.local.environment import vip_subnet
from services.provisioner.adapters.netns_network import NetnsNetwork
from services.provisioner.settings import (
    AmphoraHostSettings,
    NetnsDriverSettings,
    NetnsNetworkSettings,
)

NETWORK: Final = "vip"
_IP: Final = "/usr/sbin/ip"


@dataclass(frozen=True)
class AmphoraHosts:
    """``count`` netns hosts ``h1``... for the stack whose VIP octet is ``octet``."""

    octet: int
    count: int

    @property
    def gateway(self) -> str:
        return f"198.19.{self.octet}.1"

    @property
    def prefixes(self) -> list[str]:
        """Every namespace of the stack starts with one of these."""
        return [self.netns.namespace_prefix, self.netns.network_prefix]

    @property
    def netns(self) -> NetnsDriverSettings:
        return NetnsDriverSettings(
            namespace_prefix=f"a{self.octet}-",
            network_prefix=f"f{self.octet}-",
            networks=[
                NetnsNetworkSettings(
                    name=NETWORK,
                    subnet=f"198.19.{self.octet}.0/24",
                    gateway=self.gateway,
                    ip_range=f"198.19.{self.octet}.0/25",
                )
            ],
        )

    def provisioner_environment(self) -> dict[str, str]:
        """The provisioner's settings (without its FULCRUM_PROVISIONER_ prefix)."""
        hosts = [AmphoraHostSettings(name=f"h{i}").model_dump() for i in range(1, self.count + 1)]
        netns = self.netns
        return {
            "DRIVER": "netns",
            "HOSTS": json.dumps(hosts),
            "ANTI_AFFINITY": "soft",
            "NETNS__NAMESPACE_PREFIX": netns.namespace_prefix,
            "NETNS__NETWORK_PREFIX": netns.network_prefix,
            "NETNS__NETWORKS": json.dumps([n.model_dump() for n in netns.networks]),
        }

    def vip_subnets(self) -> list[dict[str, Any]]:
        base = f"198.19.{self.octet}"
        return vip_subnet(f"{base}.0/24", f"{base}.130", f"{base}.250", self.gateway)

    def prepare(self, state: Path) -> None:
        """Make (or repair) the switch and its uplink holding the gateway."""
        network = NetnsNetwork(self.netns, state / "switch")
        asyncio.run(network.prepare_network(NETWORK))


def remove_namespaces(prefixes: list[str]) -> list[str]:
    """Kill every process in the namespaces named with ``prefixes`` and delete them, and the
    root namespace's end of their uplinks; returns the namespaces deleted."""
    if not prefixes:
        return []
    listed = subprocess.run(
        [_IP, "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split("\n")
    names = [line.split()[0] for line in listed if line.strip()]
    ours = [name for name in names if any(name.startswith(p) for p in prefixes)]
    for name in ours:
        pids = subprocess.run(
            [_IP, "netns", "pids", name], capture_output=True, text=True, timeout=10, check=False
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for name in ours:
        subprocess.run([_IP, "link", "del", name], capture_output=True, timeout=10, check=False)
        subprocess.run([_IP, "netns", "del", name], capture_output=True, timeout=10, check=False)
    return ours
