"""A private docker engine for tests, make targets and benches.

`PrivateDockerd(state_dir)` runs Debian's ``dockerd`` with its own socket, data-root, exec-root,
pidfile and log under ``state_dir``. Its default bridge (made here, on ``bip``; not docker0, so a
system engine may run beside it) and every network it allocates from ``address_pools`` lie
inside 198.18.0.0/15, never docker's 172.17/16 or 10/8 defaults; ``"ip": "127.0.0.1"`` publishes
ports on loopback only. Images stay in the data-root between runs, so builds and imports are
cached.

Several private engines (other checkouts, a bench beside a test run) share one host: without
an explicit config each takes a free *slot* n (bridge ``fulcrum<n>`` on 198.18.(200+n).1/24,
pool 198.19.(32n).0/19), free meaning no such bridge and no host route overlapping those
subnets. The choice is made under a host-wide lock, kept in ``state_dir/slot`` and marked on the
bridge (its alias is the state dir), so a restart takes the same slot back.

Before the first start the host's links, iptables rules and chains and ``ip_forward`` are saved
in ``host-baseline.json`` (kept across an unclean stop). ``stop`` removes every container and
network through the engine, stops dockerd and its containerd by pid, unmounts what they left
under ``state_dir``, then deletes its own bridges. When no other engine's bridge remains it
restores the host to the baseline (rules, chains, policies, ``ip_forward``); while another
engine runs it removes only the rules naming its own bridges or subnets and leaves the shared
chains, policies and ``ip_forward`` to that engine.

Command line (used by ``make dockerd`` / ``make dockerd-stop``)::

    python -m deploy.local.dockerd start|stop|status [--state-dir .state/docker]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import http.client
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from libs.common.errors import InfrastructureError

__all__ = [
    "DEFAULT_STATE_DIR",
    "DockerdConfig",
    "DockerdError",
    "PrivateDockerd",
    "host_lock",
    "networks_in_use",
    "reserved_subnets",
    "slot_config",
]

DEFAULT_STATE_DIR: Final = Path(".state/docker")
_ALLOWED_RANGE: Final = ipaddress.ip_network("198.18.0.0/15")
_LOG_TAIL_BYTES: Final = 4000
# sun_path holds 108 bytes; containerd's socket lives a few levels under exec-root.
_MAX_STATE_DIR_LEN: Final = 70
_BUILTIN_CHAINS: Final = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
_NETWORK_BRIDGE: Final = re.compile(r"br-[0-9a-f]{12}")
# Default bridges of private engines (ours and other checkouts'), and a system engine's.
_ENGINE_BRIDGE: Final = re.compile(r"fulcrum\d+|docker0")
_SLOTS: Final = 8
_HOST_LOCK: Final = Path("/run/lock/fulcrum-dockerd.lock")
_IP_FORWARD: Final = Path("/proc/sys/net/ipv4/ip_forward")
_PR_SET_PDEATHSIG: Final = 1


class DockerdError(InfrastructureError):
    """dockerd is missing, refused to start, or did not stop; carries its log tail."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        text = f"dockerd: {message}"
        if log_tail.strip():
            text += f"\n--- dockerd log tail ---\n{log_tail.rstrip()}"
        super().__init__(text)
        self.log_tail = log_tail


@dataclass(frozen=True)
class DockerdConfig:
    """Addresses and timeouts of the private engine; every subnet must lie in 198.18.0.0/15."""

    bridge: str = "fulcrum0"
    bip: str = "198.18.200.1/24"
    address_pools: tuple[str, ...] = ("198.19.0.0/16",)
    pool_size: int = 24
    published_ip: str = "127.0.0.1"
    ready_timeout: float = 30.0
    stop_timeout: float = 20.0
    # Seconds dockerd gives running containers on shutdown (stop removes them first anyway).
    shutdown_timeout: int = 5

    def __post_init__(self) -> None:
        for subnet in self.subnets():
            if not subnet.subnet_of(_ALLOWED_RANGE):  # type: ignore[arg-type]
                raise ValueError(f"{subnet} is outside {_ALLOWED_RANGE}")

    def subnets(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The default bridge's subnet and the address pools."""
        return [
            ipaddress.ip_interface(self.bip).network,
            *(ipaddress.ip_network(pool) for pool in self.address_pools),
        ]


def slot_config(slot: int) -> DockerdConfig:
    """The addresses of slot ``slot`` (0-7): bridge ``fulcrum<slot>``, its bip and its pool."""
    if not 0 <= slot < _SLOTS:
        raise ValueError(f"slot {slot} is not in 0..{_SLOTS - 1}")
    return DockerdConfig(
        bridge=f"fulcrum{slot}",
        bip=f"198.18.{200 + slot}.1/24",
        address_pools=(f"198.19.{32 * slot}.0/19",),
    )


def _lock_dir() -> Path:
    return _HOST_LOCK.parent if _HOST_LOCK.parent.is_dir() else Path("/tmp")


@contextlib.contextmanager
def host_lock() -> Iterator[None]:
    """Held while an engine picks its addresses or a caller reserves subnets."""
    with (_lock_dir() / _HOST_LOCK.name).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def reserved_subnets(candidates: Sequence[str], count: int) -> Iterator[list[str]]:
    """Reserve ``count`` of ``candidates`` (inside 198.18.0.0/15) for fixed-subnet networks.

    A candidate is taken when a host route overlaps it or another process holds its lock
    file; the chosen ones stay locked until the block ends (or the process dies), so that
    test runs in several checkouts never put two bridges on one subnet. Raises DockerdError
    when fewer than ``count`` are free.
    """
    held: list[tuple[str, Any]] = []
    try:
        with host_lock():
            used = networks_in_use()
            for candidate in candidates:
                network = ipaddress.ip_network(candidate)
                if not network.subnet_of(_ALLOWED_RANGE):  # type: ignore[arg-type]
                    raise ValueError(f"{network} is outside {_ALLOWED_RANGE}")
                if any(network.overlaps(other) for other in used):
                    continue
                name = f"fulcrum-subnet-{network.network_address}-{network.prefixlen}.lock"
                handle = (_lock_dir() / name).open("a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                held.append((candidate, handle))
                if len(held) == count:
                    break
            else:
                raise DockerdError(f"fewer than {count} of {list(candidates)} are free here")
        yield [candidate for candidate, _ in held]
    finally:
        for _, handle in held:
            handle.close()  # closing releases the lock


@dataclass
class _Baseline:
    """What the host looked like before the private engine touched it."""

    links: list[str]
    iptables: dict[str, list[str]]  # table -> lines of iptables-save ("-A ...", ":CHAIN POL")
    ip_forward: str

    @classmethod
    def capture(cls) -> _Baseline:
        """The host now; while another private engine runs, the baseline it saved before it
        changed the host (its bridge's alias names its state dir), so that whichever engine
        stops last restores the host as it was before the first one started."""
        for name in _link_names():
            alias = _link_alias(name) if _ENGINE_BRIDGE.fullmatch(name) else None
            if not alias:
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                saved = json.loads((Path(alias) / "host-baseline.json").read_text())
                return cls(list(saved["links"]), dict(saved["iptables"]), str(saved["ip_forward"]))
        return cls(_link_names(), _iptables_tables(), _read_ip_forward())


@dataclass
class PrivateDockerd:
    """One dockerd per ``state_dir``; ``start`` attaches to it when it already runs."""

    state_dir: Path = DEFAULT_STATE_DIR
    # None: take a free slot of the host (see the module docstring) at start.
    config: DockerdConfig | None = None
    dockerd_bin: str | None = None
    # SIGTERM dockerd when the starting process dies (tests); `make dockerd` keeps it running.
    die_with_parent: bool = False
    # True when this object started the daemon (then the caller should stop it).
    started: bool = field(default=False, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()

    # -- paths -------------------------------------------------------------------------------

    @property
    def socket_path(self) -> Path:
        return self.state_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        """The ``DOCKER_HOST`` value of this engine."""
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "dockerd.log"

    @property
    def _pidfile(self) -> Path:
        return self.state_dir / "dockerd.pid"

    @property
    def _exec_root(self) -> Path:
        return self.state_dir / "exec"

    @property
    def _baseline_path(self) -> Path:
        return self.state_dir / "host-baseline.json"

    @property
    def _slot_path(self) -> Path:
        return self.state_dir / "slot"

    @property
    def settings(self) -> DockerdConfig:
        """The explicit config, else that of the slot this state dir has (or slot 0)."""
        if self.config is not None:
            return self.config
        return slot_config(self._recorded_slot() or 0)

    def _recorded_slot(self) -> int | None:
        try:
            slot = int(self._slot_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return slot if 0 <= slot < _SLOTS else None

    def _claim_slot(self) -> None:
        """Pick this engine's addresses (caller holds ``host_lock``): the recorded slot when it
        is still ours or free, else the first free one."""
        if self.config is not None:
            return
        recorded = self._recorded_slot()
        order = ([recorded] if recorded is not None else []) + list(range(_SLOTS))
        routes = networks_in_use()
        for slot in order:
            config = slot_config(slot)
            alias = _link_alias(config.bridge)
            if alias is not None:  # the bridge exists: ours (from an unclean stop) or taken
                if alias == str(self.state_dir):
                    break
                continue
            if not any(s.overlaps(r) for s in config.subnets() for r in routes):
                break
        else:
            raise DockerdError(f"all {_SLOTS} slots of private engines are in use on this host")
        self._slot_path.write_text(f"{slot}\n")

    def daemon_json(self) -> dict[str, Any]:
        """The daemon configuration written to ``state_dir/daemon.json``."""
        config = self.settings
        return {
            "data-root": str(self.state_dir / "data"),
            "exec-root": str(self._exec_root),
            "pidfile": str(self._pidfile),
            "hosts": [self.docker_host],
            "bridge": config.bridge,
            "default-address-pools": [
                {"base": pool, "size": config.pool_size} for pool in config.address_pools
            ],
            "ip": config.published_ip,
            "storage-driver": "overlay2",
            "shutdown-timeout": config.shutdown_timeout,
            "log-level": "warn",
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of this state dir's running dockerd, or None."""
        try:
            pid = int(self._pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _process_named(pid, "dockerd") else None

    def running(self) -> bool:
        return self.pid() is not None and _ping(self.socket_path)

    def start(self) -> str:
        """Start dockerd unless it already runs; return its ``DOCKER_HOST`` once it answers.

        Raises DockerdError (with the log tail) when dockerd is missing, not run as root, or
        exits or stays silent for ``ready_timeout`` seconds; a failed start is cleaned up.
        """
        if self.running():
            return self.docker_host
        binary = self._binary()
        if os.geteuid() != 0:
            raise DockerdError("a private dockerd needs root (it creates bridges and iptables)")
        if len(str(self.state_dir)) > _MAX_STATE_DIR_LEN:
            raise DockerdError(
                f"state dir {self.state_dir} is longer than {_MAX_STATE_DIR_LEN} characters; "
                "unix socket paths under it would not fit"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with host_lock():
            if not self._baseline_path.exists():
                baseline = _Baseline.capture()
                self._baseline_path.write_text(json.dumps(baseline.__dict__, indent=1))
            self._claim_slot()
            self._ensure_bridge()
        config_path = self.state_dir / "daemon.json"
        config_path.write_text(json.dumps(self.daemon_json(), indent=1))
        self.socket_path.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    [binary, "--config-file", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_term_with_parent if self.die_with_parent else None,
                )
            except OSError as exc:
                raise DockerdError(f"cannot execute {binary}: {exc}") from exc
        self.started = True
        deadline = time.monotonic() + self.settings.ready_timeout
        while time.monotonic() < deadline:
            if _ping(self.socket_path):
                return self.docker_host
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup_after_failed_start()
                raise DockerdError(
                    f"exited with status {code} while starting", log_tail=self._tail()
                )
            time.sleep(0.05)
        self._cleanup_after_failed_start()
        raise DockerdError(
            f"not answering on {self.socket_path} after {self.settings.ready_timeout:.0f} s",
            log_tail=self._tail(),
        )

    def stop(self) -> None:
        """Remove containers and networks, stop dockerd and containerd, restore the host.

        Safe to call when nothing runs (it still removes leftovers of an unclean stop).
        """
        pid = self.pid()
        try:
            if pid is not None and _ping(self.socket_path):
                _EngineAPI(self.socket_path).remove_everything()
        finally:  # an engine that refuses to remove something is stopped all the same
            if pid is not None:
                self._terminate(pid)
            self._stop_containerd()
            self._unmount_leftovers()
            self._restore_host()
            self.started = False

    def _terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, self.settings.stop_timeout, self._proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, 5.0, self._proc):
                raise DockerdError(f"pid {pid} survived SIGKILL", log_tail=self._tail())
        self._proc = None

    def _stop_containerd(self) -> None:
        """dockerd normally stops the containerd it spawned; make sure after a SIGKILL."""
        for pidfile in (self._exec_root / "containerd").glob("*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if _process_named(pid, "containerd"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                if not _wait_gone(pid, 10.0, None):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def _cleanup_after_failed_start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._terminate(self._proc.pid)
        self._proc = None
        self._stop_containerd()
        self._unmount_leftovers()
        self._restore_host()
        self.started = False

    def _restore_host(self) -> None:
        if not self._baseline_path.exists():
            return
        saved = json.loads(self._baseline_path.read_text())
        baseline = _Baseline(saved["links"], saved["iptables"], saved["ip_forward"])
        own_links = [
            name
            for name in _link_names()
            if name not in baseline.links and self._is_our_bridge(name)
        ]
        for name in own_links:
            _run(["ip", "link", "delete", name], check=False)
        # Any engine bridge left (another checkout's, a system docker0) is another engine.
        others = [name for name in _link_names() if _ENGINE_BRIDGE.fullmatch(name)]
        if others:
            # Another engine runs: its rules, the shared DOCKER chains and ip_forward stay.
            _remove_rules_naming(baseline.iptables, set(own_links), self.settings.subnets())
        else:
            _restore_iptables(baseline.iptables)
            if _read_ip_forward() != baseline.ip_forward:
                _IP_FORWARD.write_text(baseline.ip_forward + "\n")
        self._baseline_path.unlink()

    # -- helpers -----------------------------------------------------------------------------

    def _is_our_bridge(self, name: str) -> bool:
        """Our default bridge, or a network bridge (br-<id>) of this engine: on addresses of
        our pools, or a network in our data-root's network store (fixed subnets)."""
        config = self.settings
        if name == config.bridge:
            return _link_alias(name) in (str(self.state_dir), "")
        if not _NETWORK_BRIDGE.fullmatch(name):
            return False
        out = _run(["ip", "-j", "-4", "addr", "show", "dev", name], check=False)
        addresses = [
            ipaddress.ip_address(info["local"])
            for link in json.loads(out.stdout or "[]")
            for info in link.get("addr_info", [])
        ]
        pools = [ipaddress.ip_network(pool) for pool in config.address_pools]
        if addresses and all(any(a in pool for pool in pools) for a in addresses):
            return True
        store = self.state_dir / "data" / "network" / "files" / "local-kv.db"
        try:
            return name.removeprefix("br-").encode() in store.read_bytes()
        except OSError:
            return False

    def _binary(self) -> str:
        found = self.dockerd_bin or shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not os.access(found, os.X_OK):
            raise DockerdError(
                f"{found} not found; install the engine: apt-get install docker.io (Debian)"
            )
        return found

    def _ensure_bridge(self) -> None:
        """Create the default bridge on ``bip`` (dockerd only creates docker0 by itself),
        its alias naming this state dir."""
        config = self.settings
        name, wanted = config.bridge, ipaddress.ip_interface(config.bip)
        out = _run(["ip", "-j", "addr", "show", "dev", name], check=False)
        if out.returncode != 0:
            _run(["ip", "link", "add", "name", name, "type", "bridge"])
            _run(["ip", "link", "set", "dev", name, "alias", str(self.state_dir)])
            _run(["ip", "addr", "add", str(wanted), "dev", name])
        else:
            alias = _link_alias(name)
            if alias and alias != str(self.state_dir):
                raise DockerdError(f"bridge {name} belongs to the engine of {alias}")
            present = [
                ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
                for link in json.loads(out.stdout or "[]")
                for info in link.get("addr_info", [])
                if info.get("family") == "inet"
            ]
            if present and wanted not in present:
                raise DockerdError(
                    f"bridge {name} exists with {present}, not {wanted} (another engine?)"
                )
            if not present:
                _run(["ip", "addr", "add", str(wanted), "dev", name])
        _run(["ip", "link", "set", name, "up"])

    def _unmount_leftovers(self) -> None:
        """Mounts dockerd or containerd left under state_dir (e.g. after a crash)."""
        try:
            lines = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return
        prefix = f"{self.state_dir}/"
        points = [line.split()[1] for line in lines if len(line.split()) > 1]
        for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
            _run(["umount", "-l", point], check=False)

    def _tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                return log.read().decode(errors="replace")
        except OSError:
            return ""


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _EngineAPI:
    """The few engine calls ``stop`` needs, over the unix socket (no SDK needed)."""

    def __init__(self, socket_path: Path, timeout: float = 60.0) -> None:
        self._socket_path = socket_path
        self._timeout = timeout

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        conn = _UnixHTTPConnection(self._socket_path, self._timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def call(self, method: str, path: str) -> Any:
        """JSON answer of a call; 404 counts as done (already gone), other errors raise."""
        status, body = self.request(method, path)
        if status >= 400 and status != 404:
            raise DockerdError(f"{method} {path}: {status} {body[:300]!r}")
        return json.loads(body) if body.strip() and status < 300 else None

    def remove_everything(self) -> None:
        for container in self.call("GET", "/containers/json?all=1") or []:
            self.call("DELETE", f"/containers/{container['Id']}?force=1&v=1")
        for network in self.call("GET", "/networks") or []:
            if network["Name"] not in ("bridge", "host", "none"):
                self.call("DELETE", f"/networks/{quote(network['Id'])}")


def _ping(socket_path: Path) -> bool:
    try:
        status, _ = _EngineAPI(socket_path, timeout=2.0).request("GET", "/_ping")
    except (OSError, http.client.HTTPException):
        return False
    return status == 200


def _term_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _process_state(pid: int) -> tuple[str, str] | None:
    """(command name, state letter) of ``pid``, or None when there is no such process."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return comm, stat.rsplit(")", 1)[-1].split()[0]


def _process_named(pid: int, name: str) -> bool:
    """True when ``pid`` runs (not a zombie) and its command name is ``name``."""
    found = _process_state(pid)
    return found is not None and found[0] == name and found[1] != "Z"


def _wait_gone(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None) -> bool:
    """Wait until ``pid`` has exited (reaping it when it is our child ``proc``)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.pid == pid:
            if proc.poll() is not None:
                return True
        else:
            found = _process_state(pid)
            if found is None or found[1] == "Z":
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise DockerdError(f"{argv[0]} is missing: {exc}") from exc
    if check and result.returncode != 0:
        raise DockerdError(f"{shlex.join(argv)} failed: {result.stderr.strip()}")
    return result


def _link_names() -> list[str]:
    out = _run(["ip", "-j", "link", "show"])
    return sorted(link["ifname"] for link in json.loads(out.stdout or "[]"))


def _link_alias(name: str) -> str | None:
    """The alias of link ``name`` ("" when it has none), None when there is no such link."""
    out = _run(["ip", "-d", "-j", "link", "show", "dev", name], check=False)
    if out.returncode != 0:
        return None
    links = json.loads(out.stdout or "[]")
    return str(links[0].get("ifalias") or "") if links else None


def networks_in_use() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The IPv4 networks a new bridge must not take: the destinations of the host's routes
    (main table; default excluded), the networks of every link's addresses (a bridge left DOWN
    by a killed engine has no route but keeps its address), and the sources of NAT rules (a
    killed engine's ``-s <subnet> ! -o <its bridge> -j MASQUERADE`` would rewrite, and so
    break, the traffic of a new bridge on that subnet, VRRP among others)."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    routes = _run(["ip", "-4", "-j", "route", "show"], check=False)
    for route in json.loads(routes.stdout or "[]"):
        if route.get("dst") not in (None, "default"):
            used.append(ipaddress.ip_network(route["dst"], strict=False))
    links = _run(["ip", "-4", "-j", "addr", "show"], check=False)
    for link in json.loads(links.stdout or "[]"):
        for address in link.get("addr_info", []):
            network = ipaddress.ip_network(f"{address['local']}/{address['prefixlen']}", False)
            if not network.is_loopback:
                used.append(network)
    for line in _iptables_tables().get("nat", []):
        words = line.split()
        for flag, value in zip(words, words[1:], strict=False):
            if flag == "-s":
                with contextlib.suppress(ValueError):
                    used.append(ipaddress.ip_network(value, strict=False))
    return used


def _read_ip_forward() -> str:
    try:
        return _IP_FORWARD.read_text().strip()
    except OSError:
        return "0"


def _iptables_tables() -> dict[str, list[str]]:
    """``iptables-save`` as {table: [":CHAIN POLICY", "-A CHAIN ...", ...]} (counters dropped)."""
    if shutil.which("iptables-save") is None:
        return {}
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in _run(["iptables-save"]).stdout.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
        elif current is not None and line.startswith(":"):
            name, policy = line[1:].split()[:2]
            current.append(f":{name} {policy}")
        elif current is not None and line.startswith("-A "):
            current.append(line)
    return tables


def _restore_iptables(baseline: dict[str, list[str]]) -> None:
    """Delete rules and chains added since ``baseline``; put built-in policies back."""
    if shutil.which("iptables") is None:
        return
    for table, lines in _iptables_tables().items():
        before = baseline.get(table, [])
        chains_before = {line[1:].split()[0] for line in before if line.startswith(":")}
        policies_before = {
            line[1:].split()[0]: line.split()[1] for line in before if line.startswith(":")
        }
        added_chains = [
            line[1:].split()[0]
            for line in lines
            if line.startswith(":") and line[1:].split()[0] not in chains_before
        ]
        remaining = Counter(line for line in before if line.startswith("-A "))
        for line in reversed([ln for ln in lines if ln.startswith("-A ")]):
            if remaining[line] > 0:
                remaining[line] -= 1
                continue
            chain = line.split()[1]
            if chain in added_chains:
                continue  # flushed below
            _run(["iptables", "-t", table, "-D", *shlex.split(line)[1:]], check=False)
        for chain in added_chains:
            _run(["iptables", "-t", table, "-F", chain], check=False)
        for chain in added_chains:
            _run(["iptables", "-t", table, "-X", chain], check=False)
        for chain in _BUILTIN_CHAINS.get(table, ()):
            current = next((ln.split()[1] for ln in lines if ln.startswith(f":{chain} ")), None)
            wanted = policies_before.get(chain, "ACCEPT")
            if current is not None and current != wanted:
                _run(["iptables", "-t", table, "-P", chain, wanted], check=False)


def _remove_rules_naming(
    baseline: dict[str, list[str]],
    links: set[str],
    subnets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> None:
    """Delete the rules added since ``baseline`` that name one of ``links`` (-i/-o) or a
    source/destination inside ``subnets``; other rules, chains and policies stay."""
    if shutil.which("iptables") is None:
        return
    for table, lines in _iptables_tables().items():
        remaining = Counter(line for line in baseline.get(table, []) if line.startswith("-A "))
        for line in reversed([ln for ln in lines if ln.startswith("-A ")]):
            if remaining[line] > 0:
                remaining[line] -= 1
                continue
            words = shlex.split(line)
            named = False
            for flag, value in zip(words, words[1:], strict=False):
                if flag in ("-i", "-o") and value in links:
                    named = True
                elif flag in ("-s", "-d"):
                    with contextlib.suppress(ValueError):
                        target = ipaddress.ip_network(value, strict=False)
                        named = named or any(target.subnet_of(s) for s in subnets)  # type: ignore[arg-type]
            if named:
                _run(["iptables", "-t", table, "-D", *words[1:]], check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.dockerd", description=__doc__)
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    engine = PrivateDockerd(args.state_dir)
    try:
        if args.command == "start":
            was_running = engine.running()
            url = engine.start()
            state = "already running" if was_running else "started"
            print(f"dockerd {state} (pid {engine.pid()}); export DOCKER_HOST={url}")
        elif args.command == "stop":
            pid = engine.pid()
            engine.stop()
            print(f"dockerd stopped (pid {pid})" if pid else "dockerd was not running; cleaned up")
        else:
            if engine.running():
                print(f"running (pid {engine.pid()}); export DOCKER_HOST={engine.docker_host}")
            else:
                print("not running")
                return 3
    except DockerdError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
