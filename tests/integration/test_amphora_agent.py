"""The amphora agent as a real process with a real HAProxy, driven over mutual TLS.

Everything listens on 127.0.0.0/8. Backends are a second HAProxy answering `s1`..`s4` per port;
the load balancer's frontend binds 127.0.0.2. Every process is stopped by pid in fixtures.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from pydantic import ValidationError

from libs.common.agent_contract import (
    NamedServerChange,
    NewServer,
    ServerState,
    UdpConfig,
    UdpListener,
)
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.adapters.agent_client import (
    AgentRejected,
    AgentUnavailable,
    AmphoraAgentClient,
)

HAPROXY = Path("/usr/sbin/haproxy")
REPO = Path(__file__).resolve().parents[2]
VIP = "127.0.0.2"
BACKEND_NAMES = ("s1", "s2", "s3", "s4")


# -- processes -------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal by pid, wait up to 10 s, then SIGKILL; returns the exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


@dataclass(frozen=True)
class Pki:
    ca: DeploymentCA
    directory: Path
    amphora_id: str

    @property
    def ca_cert(self) -> Path:
        return self.ca.cert_path

    def path(self, name: str) -> Path:
        return self.directory / name


def make_pki(directory: Path) -> Pki:
    amphora_id = str(uuid.uuid4())
    ca = DeploymentCA.load_or_create(directory / "ca")
    issued = {
        "server": ca.issue_server_cert(amphora_id, [amphora_id, "127.0.0.1"]),
        "client": ca.issue_client_cert("provisioner"),
        "foreign-client": DeploymentCA.load_or_create(directory / "other-ca").issue_client_cert(
            "intruder"
        ),
    }
    for name, (cert, key) in issued.items():
        write_private_file(directory / f"{name}.pem", cert)
        write_private_file(directory / f"{name}.key", key)
    return Pki(ca=ca, directory=directory, amphora_id=amphora_id)


@dataclass
class Agent:
    process: subprocess.Popen[bytes]
    state_dir: Path
    log: Path
    port: int = 0
    started_in: float = 0.0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def haproxy_pid(self) -> int | None:
        with suppress(OSError, ValueError):
            return int((self.state_dir / "haproxy.pid").read_text())
        return None


def launch_agent(pki: Pki, state_dir: Path, *, port: int = 0, wait: bool = True) -> Agent:
    """Start `python -m services.amphora`; with `wait`, return once the port file appears."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "agent.port").unlink(missing_ok=True)
    env = {
        **os.environ,
        "FULCRUM_AMPHORA_AMPHORA_ID": pki.amphora_id,
        "FULCRUM_AMPHORA_LB_ID": "lb-under-test",
        "FULCRUM_AMPHORA_BIND_HOST": "127.0.0.1",
        "FULCRUM_AMPHORA_BIND_PORT": str(port),
        "FULCRUM_AMPHORA_STATE_DIR": str(state_dir),
        "FULCRUM_AMPHORA_HAPROXY_BIN": str(HAPROXY),
        "FULCRUM_AMPHORA_CA_CERT": str(pki.ca_cert),
        "FULCRUM_AMPHORA_SERVER_CERT": str(pki.path("server.pem")),
        "FULCRUM_AMPHORA_SERVER_KEY": str(pki.path("server.key")),
        "FULCRUM_AMPHORA_DRAIN_TIMEOUT": "5",
    }
    log = state_dir.parent / f"{state_dir.name}-agent.log"
    started = time.monotonic()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.amphora"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    agent = Agent(process=process, state_dir=state_dir, log=log, port=port)
    if wait:
        wait_for_port_file(agent, started)
    return agent


def wait_for_port_file(agent: Agent, started: float) -> None:
    port_file = agent.state_dir / "agent.port"
    deadline = started + 10
    while time.monotonic() < deadline:
        if agent.process.poll() is not None:
            raise AssertionError(f"agent exited early:\n{agent.log.read_text()}")
        with suppress(FileNotFoundError, ValueError):
            agent.port = int(port_file.read_text())
            agent.started_in = time.monotonic() - started
            return
        time.sleep(0.01)
    raise AssertionError(f"agent wrote no port file in 10 s:\n{agent.log.read_text()}")


def shut_down(agent: Agent) -> None:
    """Stop the agent by pid; kill its HAProxy by pid too if the agent left it behind."""
    haproxy_pid = agent.haproxy_pid()
    stop_process(agent.process)
    if haproxy_pid is not None and pid_alive(haproxy_pid):
        with suppress(ProcessLookupError):
            os.kill(haproxy_pid, signal.SIGKILL)


@dataclass(frozen=True)
class Backends:
    ports: dict[str, int]


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    """One HAProxy answering 200 with its name (`s1`..`s4`) on four loopback ports."""
    directory = tmp_path_factory.mktemp("backends")
    ports = {name: free_port() for name in BACKEND_NAMES}
    sections = "".join(
        f"frontend {name}\n    bind 127.0.0.1:{port}\n"
        f"    http-request return status 200 content-type text/plain string {name}\n"
        for name, port in ports.items()
    )
    config = directory / "backends.cfg"
    config.write_text(
        "defaults\n    mode http\n    timeout client 10s\n    timeout connect 2s\n"
        f"    timeout server 10s\n{sections}"
    )
    process = subprocess.Popen(
        [str(HAPROXY), "-db", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        for port in ports.values():
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert time.monotonic() < deadline, "backend haproxy did not listen"
                time.sleep(0.01)
        yield Backends(ports)
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def agent(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    running = launch_agent(pki, tmp_path_factory.mktemp("amphora") / "state")
    try:
        yield running
    finally:
        shut_down(running)


def agent_client(pki: Pki, agent: Agent, server_name: str | None = None) -> AmphoraAgentClient:
    return AmphoraAgentClient(
        agent.url,
        pki.ca_cert,
        pki.path("client.pem"),
        pki.path("client.key"),
        server_name=server_name or pki.amphora_id,
    )


@pytest_asyncio.fixture
async def client(pki: Pki, agent: Agent) -> AsyncIterator[AmphoraAgentClient]:
    async with agent_client(pki, agent) as opened:
        yield opened


# -- the load balancer's config and traffic ----------------------------------------------------


@dataclass
class LoadBalancer:
    stats_socket: str
    backends: Backends
    port: int = field(default_factory=lambda: free_port(VIP))
    revision: int = 0

    def config(self, servers: tuple[str, ...] = ("s1", "s2"), bind_port: int | None = None) -> str:
        """A fresh revision each call, so every push is a real reload; set up for reloads as the
        provisioner's template is (`expose-fd listeners`, `option idle-close-on-response`,
        `hard-stop-after`): without the first, a reload resets the connections waiting in the
        retiring process's accept queue."""
        self.revision += 1
        lines = "".join(
            f"    server {name} 127.0.0.1:{self.backends.ports[name]} weight 100\n"
            for name in servers
        )
        return (
            f"# revision {self.revision}\n"
            "global\n"
            f"    stats socket {self.stats_socket} mode 600 level admin expose-fd listeners\n"
            "    hard-stop-after 5s\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 2s\n"
            "    timeout client 10s\n"
            "    timeout server 10s\n"
            "    timeout http-keep-alive 5s\n"
            "    option idle-close-on-response\n"
            "frontend fe\n"
            f"    bind {VIP}:{bind_port or self.port}\n"
            "    default_backend be\n"
            "backend be\n"
            "    balance roundrobin\n"
            f"{lines}"
        )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, value in (line.split(":", 1) for line in head[1:] if line)
    )
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(head[0].split()[1]), headers, body


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()


async def get_once(port: int) -> str:
    """One GET on a new connection with `Connection: close`; returns the body."""
    reader, writer = await asyncio.open_connection(VIP, port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        status, _, body = await _read_response(reader)
    finally:
        await _close(writer)
    assert status == 200
    return body.decode().strip()


class KeepAliveClient:
    """HTTP/1.1 on one reused connection; reconnects only when the server says `close`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self) -> str:
        if self.streams is None:
            self.streams = await asyncio.open_connection(VIP, self.port)
        reader, writer = self.streams
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
            status, headers, body = await _read_response(reader)
        except BaseException:
            await self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        assert status == 200
        return body.decode().strip()

    async def close(self) -> None:
        if self.streams is not None:
            await _close(self.streams[1])
            self.streams = None


async def distribution(port: int, requests: int = 40) -> Counter[str]:
    return Counter([await get_once(port) for _ in range(requests)])


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


async def run_load(
    port: int, total: int, deadline: float, workers: int = 10, pause: float = 0.01
) -> LoadResult:
    """`total` GETs from `workers` loops (half keep-alive, half close), bounded by `deadline`."""
    result = LoadResult()
    remaining = total

    async def worker(keep_alive: bool) -> None:
        nonlocal remaining
        reused = KeepAliveClient(port)
        try:
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                try:
                    await (reused.get() if keep_alive else get_once(port))
                    result.ok += 1
                except (OSError, asyncio.IncompleteReadError, AssertionError) as exc:
                    result.failures.append(repr(exc))
                # Paced so the run spans many reloads and keep-alive connections sit idle
                # between requests, which is when a retiring worker is tempted to close them.
                await asyncio.sleep(pause)
        finally:
            await reused.close()

    await asyncio.gather(*(worker(index % 2 == 0) for index in range(workers)))
    return result


@pytest_asyncio.fixture(scope="module")
async def balancer(pki: Pki, agent: Agent, backends: Backends) -> LoadBalancer:
    """The module agent's load balancer, bound to the stats socket the agent reports."""
    async with agent_client(pki, agent) as opened:
        info = await opened.info()
    return LoadBalancer(info.stats_socket, backends)


@pytest_asyncio.fixture
async def lb(client: AmphoraAgentClient, balancer: LoadBalancer) -> LoadBalancer:
    """The load balancer freshly pushed with s1 and s2, which also undoes runtime changes."""
    await client.apply_config(balancer.config())
    return balancer


# -- mutual TLS --------------------------------------------------------------------------------


async def test_client_with_ca_signed_certificate_gets_info(
    client: AmphoraAgentClient, pki: Pki, agent: Agent
) -> None:
    info = await client.info()

    assert info.amphora_id == pki.amphora_id
    assert info.lb_id == "lb-under-test"
    assert info.api_version == "1"
    assert info.haproxy_version.startswith("2.6")
    assert info.stats_socket == str(agent.state_dir / "stats.sock")
    assert info.certs_dir == str(agent.state_dir / "certs")
    ping_check = Path(str(info.external_check_command))
    assert ping_check.parent == agent.state_dir and os.access(ping_check, os.X_OK)
    assert info.has_vip_interface is False  # loopback VIPs: nothing for /v1/vrrp to plumb


async def _refused_in_handshake(port: int, context: ssl.SSLContext) -> bool:
    """True when no HTTP answer comes back: TLS 1.3 clients learn of the refusal on read."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="ignored"
        )
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        return await reader.read(64) == b""
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        await _close(writer)


def _client_context(pki: Pki, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.check_hostname = False
    if cert is not None:
        context.load_cert_chain(pki.path(f"{cert}.pem"), pki.path(f"{cert}.key"))
    return context


async def test_client_without_certificate_is_refused(pki: Pki, agent: Agent) -> None:
    assert await _refused_in_handshake(agent.port, _client_context(pki, None))


async def test_client_with_certificate_from_another_ca_is_refused(pki: Pki, agent: Agent) -> None:
    assert await _refused_in_handshake(agent.port, _client_context(pki, "foreign-client"))

    foreign = AmphoraAgentClient(
        agent.url, pki.ca_cert, pki.path("foreign-client.pem"), pki.path("foreign-client.key")
    )
    async with foreign:
        with pytest.raises(AgentUnavailable):
            await foreign.info()


async def test_an_amphora_server_certificate_cannot_act_as_a_client(pki: Pki, agent: Agent) -> None:
    assert await _refused_in_handshake(agent.port, _client_context(pki, "server"))


async def test_client_refuses_an_agent_with_the_wrong_name(pki: Pki, agent: Agent) -> None:
    async with agent_client(pki, agent, server_name="some-other-amphora") as wrong:
        with pytest.raises(AgentUnavailable, match="TLS"):
            await wrong.info()


async def test_healthz_answers_over_tls(pki: Pki, agent: Agent) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", agent.port, ssl=_client_context(pki, "client")
    )
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        status, _, body = await _read_response(reader)
    finally:
        await _close(writer)
    assert (status, body) == (200, b'{"status": "ok"}')


async def test_client_gives_up_after_bounded_connect_retries(pki: Pki) -> None:
    nobody = AmphoraAgentClient(
        f"https://127.0.0.1:{free_port()}",
        pki.ca_cert,
        pki.path("client.pem"),
        pki.path("client.key"),
        connect_attempts=4,
        retry_delay=0.05,
    )
    started = time.monotonic()
    async with nobody:
        with pytest.raises(AgentUnavailable, match="unreachable"):
            await nobody.info()

    assert 0.3 <= time.monotonic() - started < 2  # 0.05 + 0.1 + 0.2 s of backoff


# -- configs -----------------------------------------------------------------------------------


async def test_pushed_config_serves_http_through_both_backends(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    info = await client.info()
    assert info.haproxy_running
    assert info.config_sha256 is not None
    assert await client.get_config() is not None

    assert await distribution(lb.port, 20) == {"s1": 10, "s2": 10}


async def test_metrics_count_config_pushes_and_time_reloads(
    pki: Pki, agent: Agent, lb: LoadBalancer
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", agent.port, ssl=_client_context(pki, "client")
    )
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        status, _, body = await _read_response(reader)
    finally:
        await _close(writer)
    text = body.decode()

    assert status == 200
    assert "# TYPE fulcrum_agent_config_pushes_total counter" in text
    assert 'fulcrum_agent_config_pushes_total{result="applied"}' in text
    assert "# TYPE fulcrum_agent_haproxy_reload_duration_seconds histogram" in text
    assert "fulcrum_agent_haproxy_reload_duration_seconds_count" in text
    assert "process_resident_memory_bytes" in text


async def test_same_config_twice_is_a_no_op(client: AmphoraAgentClient, lb: LoadBalancer) -> None:
    text = await client.get_config()
    assert text is not None
    installed = (await client.info()).config_sha256

    assert await client.apply_config(text) == installed


async def test_invalid_config_is_rejected_and_the_old_one_keeps_serving(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    before = await client.get_config()
    broken = lb.config().replace("balance roundrobin", "balance no-such-algorithm")

    with pytest.raises(AgentRejected) as rejected:
        await client.apply_config(broken)

    assert rejected.value.status == 400
    assert "balance only supports" in (rejected.value.details or "")
    assert await client.get_config() == before
    assert set(await distribution(lb.port, 4)) == {"s1", "s2"}


async def test_a_config_stored_without_reload_is_still_checked(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    """`?reload=false` loads nothing now, so the agent checks the file itself (`haproxy -c`):
    a later reload must not be the first to find it broken."""
    before = await client.get_config()
    broken = lb.config().replace("balance roundrobin", "balance no-such-algorithm")

    with pytest.raises(AgentRejected) as rejected:
        await client.apply_config(broken, reload=False)

    assert rejected.value.status == 400
    assert "balance only supports" in (rejected.value.details or "")
    assert await client.get_config() == before
    assert set(await distribution(lb.port, 4)) == {"s1", "s2"}


async def test_a_config_checked_later_is_installed_once_checked(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    """`&check_later=true` answers before `haproxy -c`: the file becomes the installed one
    once checked (tests/integration/test_config_check_later.py covers a refused one)."""
    text = lb.config()

    digest = await client.apply_config(text, reload=False, check_later=True)

    deadline = time.monotonic() + 10
    while (await client.info()).config_sha256 != digest:
        assert time.monotonic() < deadline, "the checked file was never installed"
        await asyncio.sleep(0.02)
    assert await client.get_config() == text
    assert set(await distribution(lb.port, 4)) == {"s1", "s2"}


@pytest.mark.parametrize("query", ["reload=false&check_later=maybe", "check_later=1", "reload=no"])
async def test_bad_push_flags_are_refused(
    client: AmphoraAgentClient, lb: LoadBalancer, query: str
) -> None:
    before = await client.get_config()

    with pytest.raises(AgentRejected) as rejected:
        await client._request("PUT", f"/haproxy/config?{query}", data=lb.config().encode())

    assert rejected.value.status == 400
    assert await client.get_config() == before


async def test_config_without_the_agents_stats_socket_is_rejected(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    text = lb.config().replace(lb.stats_socket, "/tmp/elsewhere.sock")

    with pytest.raises(AgentRejected) as rejected:
        await client.apply_config(text)

    assert rejected.value.status == 400
    assert lb.stats_socket in (rejected.value.details or "")


async def test_config_that_cannot_bind_is_rolled_back(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    before = await client.get_config()
    with socket.socket() as squatter:
        squatter.bind((VIP, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        with pytest.raises(AgentRejected) as rejected:
            await client.apply_config(lb.config(bind_port=taken))

    assert rejected.value.status == 400
    assert "cannot bind" in (rejected.value.details or "")
    assert await client.get_config() == before
    assert (await client.info()).haproxy_running
    assert set(await distribution(lb.port, 4)) == {"s1", "s2"}


async def test_reloads_under_load_drop_no_request(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    started = time.monotonic()
    load = asyncio.create_task(run_load(lb.port, total=2000, deadline=started + 10))
    reload_seconds: list[float] = []
    while not load.done():
        begin = time.monotonic()
        await client.apply_config(lb.config())
        reload_seconds.append(time.monotonic() - begin)
        await asyncio.sleep(0.05)
    result = await load

    print(
        f"\n2000 requests in {time.monotonic() - started:.2f} s across {len(reload_seconds)} "
        f"reloads; apply+reload median {statistics.median(reload_seconds) * 1000:.0f} ms, "
        f"max {max(reload_seconds) * 1000:.0f} ms"
    )
    assert result.failures == []
    assert result.ok == 2000
    assert len(reload_seconds) >= 3


# -- runtime API -------------------------------------------------------------------------------


async def test_drain_and_ready_move_traffic(client: AmphoraAgentClient, lb: LoadBalancer) -> None:
    changed = await client.server_change("be", "s1", state=ServerState.DRAIN)
    assert changed.commands == ["set server be/s1 state drain"]
    assert await distribution(lb.port, 10) == {"s2": 10}

    await client.server_change("be", "s1", state=ServerState.READY)
    assert await distribution(lb.port, 10) == {"s1": 5, "s2": 5}


async def test_weight_skews_the_distribution(client: AmphoraAgentClient, lb: LoadBalancer) -> None:
    await client.server_change("be", "s1", weight=10)

    hits = await distribution(lb.port, 55)
    assert hits["s1"] <= 6
    assert hits["s2"] >= 49


async def wait_for_status(
    client: AmphoraAgentClient, backend: str, server: str, status: str
) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = await client.stats()
        if any(
            r["pxname"] == backend and r["svname"] == server and r["status"] == status for r in rows
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{backend}/{server} not {status} within 5 s")


async def test_add_then_delete_a_server(client: AmphoraAgentClient, lb: LoadBalancer) -> None:
    s3 = NewServer(
        address="127.0.0.1",
        port=lb.backends.ports["s3"],
        options=["check", "inter", "1s", "weight", "100"],
    )
    added = await client.server_change("be", "s3", add=s3)
    assert added.commands[-2:] == ["enable health be/s3", "enable server be/s3"]
    # A server added with `check` takes traffic once its first health check passes.
    await wait_for_status(client, "be", "s3", "UP")
    assert await distribution(lb.port, 30) == {"s1": 10, "s2": 10, "s3": 10}

    deleted = await client.server_change("be", "s3", delete=True)
    assert deleted.commands == ["disable server be/s3", "del server be/s3"]
    assert set(await distribution(lb.port, 10)) == {"s1", "s2"}


async def test_maint_and_unknown_servers(client: AmphoraAgentClient, lb: LoadBalancer) -> None:
    await client.server_change("be", "s2", state=ServerState.MAINT)
    assert await distribution(lb.port, 6) == {"s1": 6}

    with pytest.raises(AgentRejected) as missing:
        await client.server_change("be", "nope", weight=5)
    assert missing.value.status == 404
    with pytest.raises(AgentRejected) as refused:
        await client.server_change("be", "s1", add=NewServer(address="127.0.0.1", port=1))
    assert refused.value.status == 409
    with pytest.raises(ValidationError):
        await client.server_change("be", "s1", weight=5, delete=True)


async def test_server_changes_and_the_config_carrying_them_go_in_one_request(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    """The changes are made in order, then the config is stored for the next reload (and
    installed once checked); a refused change stops there and stores nothing."""
    pids = {row["pid"] for row in await client.stats() if row.get("pid")}
    s3 = NewServer(address="127.0.0.1", port=lb.backends.ports["s3"], options=["weight", "100"])
    text = lb.config(("s1", "s2", "s3"))

    applied = await client.runtime_changes(
        [
            NamedServerChange(backend="be", server="s3", add=s3),
            NamedServerChange(backend="be", server="s2", state=ServerState.MAINT),
        ],
        text,
    )

    assert [c.commands for c in applied.changed] == [
        [
            f"add server be/s3 127.0.0.1:{lb.backends.ports['s3']} weight 100",
            "enable server be/s3",
        ],
        ["set server be/s2 state maint"],
    ]
    assert set(await distribution(lb.port, 6)) == {"s1", "s3"}
    deadline = time.monotonic() + 10
    while (await client.info()).config_sha256 != applied.sha256:
        assert time.monotonic() < deadline, "the stored config was never installed"
        await asyncio.sleep(0.02)
    assert await client.get_config() == text
    assert {row["pid"] for row in await client.stats() if row.get("pid")} == pids  # no reload

    with pytest.raises(AgentRejected) as missing:
        await client.runtime_changes(
            [
                NamedServerChange(backend="be", server="s1", weight=50),
                NamedServerChange(backend="be", server="nope", weight=5),
            ],
            lb.config(("s1",)),
        )
    assert missing.value.status == 404
    assert await client.get_config() == text
    with pytest.raises(ValidationError):
        NamedServerChange(backend="be;", server="s1", weight=5)


async def test_stats_has_frontend_backend_and_server_rows(
    client: AmphoraAgentClient, lb: LoadBalancer
) -> None:
    await distribution(lb.port, 4)

    rows = await client.stats()

    by_name = {(row["pxname"], row["svname"]): row for row in rows}
    assert {("fe", "FRONTEND"), ("be", "BACKEND"), ("be", "s1"), ("be", "s2")} <= set(by_name)
    assert isinstance(by_name[("be", "s1")]["stot"], int)
    assert by_name[("be", "BACKEND")]["status"] == "UP"


# -- certificates ------------------------------------------------------------------------------


def file_facts(path: Path) -> tuple[bytes, int] | None:
    """Content and permission bits, or None when absent."""
    if not path.exists():
        return None
    return path.read_bytes(), path.stat().st_mode & 0o777


async def test_certificate_upload_get_delete(
    client: AmphoraAgentClient, pki: Pki, agent: Agent
) -> None:
    bundle = pki.ca.issue_server_cert("www.example.test", ["www.example.test"])
    pem = bundle.cert_pem + bundle.key_pem

    stored = await client.upload_certificate("listener-1", pem)

    path = Path(stored.path)
    assert path == agent.state_dir / "certs" / "listener-1.pem"
    assert file_facts(path) == (pem, 0o600)
    assert await client.get_certificate("listener-1") == stored
    await client.delete_certificate("listener-1")
    assert file_facts(path) is None
    assert await client.get_certificate("listener-1") is None
    with pytest.raises(AgentRejected):
        await client.upload_certificate("..hidden", pem)
    with pytest.raises(AgentRejected):
        await client.upload_certificate("junk", b"not a certificate")


async def _served_certificate(pki: Pki, port: int) -> x509.Certificate:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_context(pki, "client"))
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        await _close(writer)
    return x509.load_der_x509_certificate(der)


async def test_server_certificate_rotation_applies_to_new_connections(
    client: AmphoraAgentClient, pki: Pki, agent: Agent
) -> None:
    fresh = pki.ca.issue_server_cert(pki.amphora_id, [pki.amphora_id, "127.0.0.1"], 60)

    rotated = await client.rotate_server_certificate(fresh.cert_pem, fresh.key_pem)

    served = await _served_certificate(pki, agent.port)
    assert f"{served.serial_number:x}" == rotated.serial
    assert served.not_valid_after_utc == rotated.not_after
    assert pki.path("server.pem").read_bytes() == fresh.cert_pem
    foreign = DeploymentCA.load_or_create(pki.directory / "other-ca")
    bogus = foreign.issue_server_cert(pki.amphora_id, [pki.amphora_id])
    with pytest.raises(AgentRejected) as rejected:
        await client.rotate_server_certificate(bogus.cert_pem, bogus.key_pem)
    assert rejected.value.status == 400
    assert (await _served_certificate(pki, agent.port)).serial_number == served.serial_number


# -- lifecycle of one agent process ------------------------------------------------------------


async def test_agent_lifecycle_boot_retry_delete_adopt_and_sigterm(
    tmp_path: Path, backends: Backends
) -> None:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    state_dir = tmp_path / "state"
    async with AmphoraAgentClient(
        f"https://127.0.0.1:{port}",
        pki.ca_cert,
        pki.path("client.pem"),
        pki.path("client.key"),
        server_name=pki.amphora_id,
        connect_attempts=10,
    ) as early:
        # The client starts before the agent listens: it must retry until the agent is up.
        first_info = asyncio.create_task(early.info())
        await asyncio.sleep(0.2)
        first = launch_agent(pki, state_dir, port=port, wait=False)
        second: Agent | None = None
        try:
            await asyncio.to_thread(wait_for_port_file, first, time.monotonic())
            info = await asyncio.wait_for(first_info, 10)
            assert not info.haproxy_running
            assert info.config_sha256 is None

            balancer = LoadBalancer(info.stats_socket, backends)
            with socket.socket() as squatter:
                squatter.bind((VIP, 0))
                squatter.listen()
                unbindable = balancer.config(bind_port=squatter.getsockname()[1])
                with pytest.raises(AgentRejected, match="could not load"):
                    await early.apply_config(unbindable)
            info = await early.info()
            assert (info.haproxy_running, info.config_sha256) == (False, None)

            begin = time.monotonic()
            await early.apply_config(balancer.config())
            first_start = time.monotonic() - begin
            print(f"\nfirst config (haproxy start) applied in {first_start * 1000:.0f} ms")
            assert set(await distribution(balancer.port, 4)) == {"s1", "s2"}

            await early.stop_haproxy()
            info = await early.info()
            assert (info.haproxy_running, info.config_sha256) == (False, None)
            with pytest.raises(OSError):
                await get_once(balancer.port)

            await early.apply_config(balancer.config())
            haproxy_pid = first.haproxy_pid()
            assert haproxy_pid is not None and pid_alive(haproxy_pid)

            # A crashed agent leaves HAProxy serving; the next agent adopts it.
            stop_process(first.process, signal.SIGKILL)
            assert set(await distribution(balancer.port, 2)) == {"s1", "s2"}
            second = await asyncio.to_thread(launch_agent, pki, state_dir, port=port)
            print(f"agent start to port file: {second.started_in * 1000:.0f} ms")
            assert (await early.info()).haproxy_running

            assert stop_process(second.process) == 0
            assert not pid_alive(haproxy_pid)
        finally:
            first_info.cancel()
            shut_down(first)
            if second is not None:
                shut_down(second)


async def test_an_agent_without_a_namespace_of_its_own_refuses_udp(
    client: AmphoraAgentClient,
) -> None:
    """The process driver's amphorae share the host's namespace: no nftables there."""
    config = UdpConfig(listeners=[UdpListener(id="l1", addresses=["127.0.0.2"], port=53)])
    with pytest.raises(AgentRejected) as rejected:
        await client.apply_udp(config)
    assert rejected.value.status == 409
    assert "cannot serve UDP" in rejected.value.error
    status = await client.udp_status()
    assert status.config_sha256 is None and status.listeners == []
    await client.apply_udp(UdpConfig())  # nothing to remove: accepted without nft
    assert (await client.info()).udp_config_sha256 is None
