"""A JetStream cluster of ``nats-server`` nodes on 127.0.0.1: config files, supervised programs,
and, for tests, the nodes as child processes that can be killed and restarted.

``NatsCluster(state_dir, size=3)`` keeps everything under ``state_dir``: the ports of each node
(``ports.json``, free-picked at the first use and kept while still free), one password per user
(``credentials/<user>.password``, 0600) and one directory per node holding its config
(``nats.conf``, 0600: it names the passwords), its JetStream store (``js/``) and its log.

Every node has a client port, a cluster port with routes to all the others (authenticated by
a route user), a monitoring port (``/healthz``, ``/jsz``, ``/routez``) and the
``authorization`` block of ``nats_auth.py``: one user per service with only the permissions
its code needs, ``events`` (the reader of ``fulcrum events tail``) and ``subscriber`` (outside
subscribers: the public subjects only). With ``tls`` the client port and the routes between
nodes speak TLS. Services are given every node's URL (``urls``) and their own credentials
(``settings_for``, ``environment_for``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from deploy.local.embedded import _Child, find_nats_server
from deploy.local.nats_auth import (
    EVENTS_READER,
    SERVICE_USERS,
    NatsCredentials,
    NatsTls,
    NatsUsers,
    client_environment,
)
from deploy.local.ports import LOOPBACK, _tcp_free, free_tcp_port
from deploy.local.supervision import Program
from libs.common.settings import NatsSettings

__all__ = [
    "CLUSTER_NAME",
    "EVENTS_READER",
    "SERVICE_USERS",
    "NatsCluster",
    "NatsCredentials",
    "NatsNode",
    "NatsTls",
    "NodePorts",
    "RunningNatsCluster",
]

CLUSTER_NAME: Final = "fulcrum"
_ROUTE_USER: Final = "route"
_POLL: Final = 0.1


@dataclass(frozen=True)
class NodePorts:
    client: int
    cluster: int
    monitor: int


@dataclass(frozen=True)
class NatsNode:
    """One node: ``name`` (its ``server_name``, e.g. ``nats-1``), its ports and directory."""

    name: str
    ports: NodePorts
    directory: Path
    scheme: str = "nats"

    @property
    def config_path(self) -> Path:
        return self.directory / "nats.conf"

    @property
    def store_dir(self) -> Path:
        return self.directory / "js"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats-server.log"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.ports.client}"

    @property
    def monitor_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.monitor}"


class NatsCluster:
    """The configuration of a ``size``-node cluster under ``state_dir`` (see the module doc).

    Nothing is written until ``write_configs`` (which ``programs`` and ``run`` call); ports and
    passwords, once written, are reused by later instances over the same ``state_dir``.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        size: int = 3,
        binary: Path | None = None,
        tls: NatsTls | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a NATS cluster needs at least one node")
        self.state_dir = Path(state_dir)
        self.size = size
        self.tls = tls
        self._binary = binary
        self._users = NatsUsers(self.state_dir / "credentials", extra=(_ROUTE_USER,))
        ports = self._ports()
        scheme = "tls" if tls is not None else "nats"
        self.nodes: tuple[NatsNode, ...] = tuple(
            NatsNode(name, ports[name], self.state_dir / name, scheme) for name in self._names()
        )

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, in node order."""
        return [node.url for node in self.nodes]

    @property
    def replicas(self) -> int:
        """Replicas of the event stream: 3, or every node of a smaller cluster."""
        return min(3, self.size)

    def node(self, which: int | str) -> NatsNode:
        """A node by index (0-based) or name."""
        if isinstance(which, int):
            return self.nodes[which]
        for node in self.nodes:
            if node.name == which:
                return node
        raise KeyError(which)

    def credentials_for(self, user: str) -> NatsCredentials:
        """The credentials of ``user`` (a ``nats_auth.USERS`` name); made at the first call
        and kept (0600) under ``credentials/``."""
        return self._users.credentials_for(user)

    def settings_for(self, user: str, **fields: Any) -> NatsSettings:
        """``NatsSettings`` of ``user``: every URL, its credentials, the cluster's replicas
        (plus ``fields``; with TLS, the CA that verifies the nodes)."""
        credentials = self.credentials_for(user)
        values: dict[str, Any] = {
            "servers": self.urls,
            "user": credentials.user,
            "password": credentials.password,
            "replicas": self.replicas,
        }
        if self.tls is not None:
            values["tls_ca_file"] = str(self.tls.ca_file)
        return NatsSettings(**(values | fields))

    def environment_for(self, user: str) -> dict[str, str]:
        """The ``NATS__*`` settings of ``user``, to prefix with ``FULCRUM_<SVC>_``."""
        env = client_environment(self.urls, self.credentials_for(user), self.tls)
        return env | {"NATS__REPLICAS": str(self.replicas)}

    def render_config(self, node: NatsNode) -> str:
        """The nats-server configuration of ``node`` (pure but for the passwords' files)."""
        route = self.credentials_for(_ROUTE_USER)
        routes = [
            f'    "nats-route://{route.user}:{route.password}@{LOOPBACK}:{other.ports.cluster}"'
            for other in self.nodes
            if other is not node
        ]
        lines = [
            f'server_name: "{node.name}"',
            f'listen: "{LOOPBACK}:{node.ports.client}"',
            f'http: "{LOOPBACK}:{node.ports.monitor}"',
            "jetstream {",
            f'  store_dir: "{node.store_dir}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 4GB",
            "}",
        ]
        if self.size > 1:
            lines += [
                "cluster {",
                f'  name: "{CLUSTER_NAME}"',
                f'  listen: "{LOOPBACK}:{node.ports.cluster}"',
                f'  authorization {{ user: "{route.user}", password: "{route.password}" }}',
                *self._route_tls(),
                "  routes: [",
                *routes,
                "  ]",
                "}",
            ]
        if self.tls is not None:
            lines += self.tls.server_block()
        return "\n".join(lines) + "\n" + self._users.authorization()

    def write_configs(self) -> None:
        """Write every node's config (0600) and make its store directory."""
        for node in self.nodes:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            scratch = node.config_path.with_suffix(".tmp")
            scratch.write_text(self.render_config(node))
            scratch.chmod(0o600)
            os.replace(scratch, node.config_path)

    def command(self, node: NatsNode) -> list[str]:
        """The command line that runs ``node`` from its config."""
        binary = self._binary if self._binary is not None else find_nats_server()
        return [str(binary), "-c", str(node.config_path)]

    def programs(self, log_dir: Path | None = None, priority: int = 20) -> list[Program]:
        """One supervisord ``Program`` per node (named as the node; logs in ``log_dir``, else
        the node's directory); writes the configs first."""
        self.write_configs()
        return [
            Program(
                node.name,
                self.command(node),
                (log_dir / f"{node.name}.log") if log_dir is not None else node.log_path,
                priority=priority,
                stop_wait=30,  # lame duck: clients move to the other nodes first
            )
            for node in self.nodes
        ]

    @contextlib.contextmanager
    def run(self, start_timeout: float = 30.0) -> Iterator[RunningNatsCluster]:
        """Run every node as a child process until the block ends (stopped also on failure);
        returns once every node reports healthy JetStream."""
        self.write_configs()
        running = RunningNatsCluster(self)
        try:
            for node in self.nodes:
                running.start(node.name, wait=False)
            running.wait_healthy(start_timeout)
            yield running
        finally:
            running.stop_all()

    def _route_tls(self) -> list[str]:
        return self.tls.route_block() if self.tls is not None else []

    def _names(self) -> list[str]:
        return [f"nats-{index + 1}" for index in range(self.size)]

    def _ports(self) -> dict[str, NodePorts]:
        path = self.state_dir / "ports.json"
        try:
            saved = {name: NodePorts(**p) for name, p in json.loads(path.read_text()).items()}
        except (OSError, ValueError, TypeError):
            saved = {}
        taken: set[int] = set()

        def pick(wanted: int | None) -> int:
            if wanted and wanted not in taken and _tcp_free(wanted):
                taken.add(wanted)
                return wanted
            port = free_tcp_port()
            while port in taken:
                port = free_tcp_port()
            taken.add(port)
            return port

        ports = {}
        for name in self._names():
            old = saved.get(name)
            ports[name] = NodePorts(
                client=pick(old.client if old else None),
                cluster=pick(old.cluster if old else None),
                monitor=pick(old.monitor if old else None),
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({n: p.__dict__ for n, p in ports.items()}, indent=1))
        return ports


class RunningNatsCluster:
    """The nodes of a ``NatsCluster`` as child processes (``NatsCluster.run``)."""

    def __init__(self, cluster: NatsCluster) -> None:
        self.cluster = cluster
        self._children = {
            node.name: _Child(
                node.name,
                node.log_path,
                stop_signal=signal.SIGTERM,
                stop_timeout=15.0,
                die_with_parent=True,
            )
            for node in cluster.nodes
        }

    @property
    def urls(self) -> list[str]:
        return self.cluster.urls

    def pid(self, which: int | str) -> int | None:
        return self._children[self.cluster.node(which).name].pid

    def start(self, which: int | str, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Start a node (no-op while it runs); with ``wait``, until it reports healthy."""
        node = self.cluster.node(which)
        child = self._children[node.name]
        if not child.running:
            child.spawn(self.cluster.command(node))
        if wait:
            self._wait_node_healthy(node, time.monotonic() + timeout)

    def kill(self, which: int | str) -> None:
        """SIGKILL a node: no lame duck, no flush; its store stays as the crash left it."""
        node = self.cluster.node(which)
        child = self._children[node.name]
        pid = child.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        child.stop(timeout=5.0)  # reaps it

    def restart(self, which: int | str, timeout: float = 30.0) -> None:
        """Start a killed or stopped node again and wait until it reports healthy."""
        self.start(which, wait=True, timeout=timeout)

    def stop(self, which: int | str) -> None:
        """SIGTERM a node (lame duck), SIGKILL after 15 s."""
        self._children[self.cluster.node(which).name].stop()

    def stop_all(self) -> None:
        for child in self._children.values():
            child.stop()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every node's ``/healthz`` answers 200 (JetStream current); raises
        EmbeddedServerError with the node's log tail after ``timeout``."""
        deadline = time.monotonic() + timeout
        for node in self.cluster.nodes:
            self._wait_node_healthy(node, deadline)

    def monitor(self, which: int | str, endpoint: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``jsz?streams=true``, ``routez`` ...) of a node."""
        node = self.cluster.node(which)
        with urllib.request.urlopen(f"{node.monitor_url}/{endpoint}", timeout=2.0) as answer:
            data: dict[str, Any] = json.loads(answer.read())
        return data

    def _wait_node_healthy(self, node: NatsNode, deadline: float) -> None:
        child = self._children[node.name]
        while True:
            child.check_alive()
            try:
                with urllib.request.urlopen(f"{node.monitor_url}/healthz", timeout=1.0):
                    return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                child.fail(f"{node.name} not healthy (monitor {node.monitor_url}/healthz)")
            time.sleep(_POLL)
