"""Real traffic through HAProxy running a rendered configuration; no agent involved.

Each test renders a LoadBalancerState, starts `haproxy -W` on a 127.x VIP with free ports,
and sends HTTP requests to small aiohttp members on 127.0.0.1 that answer with their name.
Everything stays on loopback; every loop is bounded; HAProxy is stopped by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import resource
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from aiohttp import web

from libs.common.domain.model import LoadBalancerState, SessionPersistence
from libs.common.pki import DeploymentCA
from services.amphora.adapters.haproxy import write_ping_check
from services.provisioner.rendering import (
    ListenerTlsFiles,
    RenderContext,
    haproxy_escape,
    maxconn_cap_for_fd_limit,
    render_haproxy,
)
from services.provisioner.rendering._escaping import logformat_escape, sample_arg
from tests.unit.test_rendering import HOSTILE, StateBuilder

HAPROXY: Final = Path("/usr/sbin/haproxy")
VIP: Final = "127.0.10.1"
OUTSIDER: Final = "127.0.0.2"  # a client source outside 127.0.0.1/32
PING_HOST: Final = "198.18.77.77"  # a member host that the PING test makes vanish
START_TIMEOUT: Final = 10.0
REQUEST_TIMEOUT: Final = aiohttp.ClientTimeout(total=10)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


# -- members ----------------------------------------------------------------------------------


@dataclass
class Member:
    """An HTTP server answering every path with its name; /health answers 200 too.

    While ``holding`` is set, requests wait for ``release`` (bounded) before answering.
    """

    name: str
    port: int = 0
    host: str = "127.0.0.1"
    hits: int = 0
    holding: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/health":
            return web.Response(text="ok")
        self.hits += 1
        if self.holding:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 10)
        return web.Response(text=self.name)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self.runner, sock).start()

    async def stop(self) -> None:
        if self.runner is not None:
            self.release.set()
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def members() -> AsyncIterator[Callable[[int], Awaitable[list[Member]]]]:
    """``await members(n)`` starts n members named m0..m(n-1); all stop after the test."""
    started: list[Member] = []

    async def start(count: int) -> list[Member]:
        batch = [Member(f"m{len(started) + i}") for i in range(count)]
        for member in batch:
            await member.start()
            started.append(member)
        return batch

    yield start
    for member in started:
        await member.stop()


# -- haproxy ----------------------------------------------------------------------------------


@dataclass
class RunningHaproxy:
    process: asyncio.subprocess.Process
    directory: Path
    stats_socket: Path
    config: str

    def url(self, port: int, path: str = "/") -> str:
        return f"http://{VIP}:{port}{path}"

    def log(self) -> str:
        return (self.directory / "haproxy.log").read_text(errors="replace")

    async def command(self, line: str) -> str:
        reader, writer = await asyncio.open_unix_connection(str(self.stats_socket))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            writer.write_eof()
            return (await reader.read()).decode()
        finally:
            writer.close()
            await writer.wait_closed()

    async def server_status(self, backend: str, server: str) -> str:
        rows = csv.DictReader(io.StringIO((await self.command("show stat")).lstrip("# ")))
        for row in rows:
            if row["pxname"] == backend and row["svname"] == server:
                return row["status"]
        raise AssertionError(f"no server {backend}/{server} in show stat")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        process.kill()
        await process.wait()


@pytest.fixture
async def haproxy() -> AsyncIterator[Callable[..., Awaitable[RunningHaproxy]]]:
    """``await haproxy(state, **ctx_fields)`` renders ``state`` and runs it as the agent runs
    HAProxy (one process, no master) until the test ends. The VIP must be ``VIP``; ports must
    be free."""
    running: list[RunningHaproxy] = []
    # Short: unix socket paths are limited to 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="fulcrum-dp-"))

    async def start(state: LoadBalancerState, **ctx_fields: Any) -> RunningHaproxy:
        workdir = directory / str(len(running))
        workdir.mkdir()
        (workdir / "servers-state").write_text("1\n")
        ctx = RenderContext(
            stats_socket=str(workdir / "stats.sock"),
            state_dir=str(workdir),
            maxconn_cap=maxconn_cap_for_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
            hard_stop_after_s=5,
            **ctx_fields,
        )
        config = render_haproxy(state, ctx)
        (workdir / "haproxy.cfg").write_text(config)
        with open(workdir / "haproxy.log", "wb") as log:
            process = await asyncio.create_subprocess_exec(
                str(HAPROXY),
                "-db",
                "-f",
                str(workdir / "haproxy.cfg"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        proxy = RunningHaproxy(process, workdir, workdir / "stats.sock", config)
        running.append(proxy)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.returncode is not None:
                raise AssertionError(f"haproxy exited:\n{proxy.log()}\n{config}")
            with contextlib.suppress(OSError):
                if "Name: HAProxy" in await proxy.command("show info"):
                    return proxy
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy not ready in {START_TIMEOUT} s:\n{proxy.log()}")
            await asyncio.sleep(0.02)

    try:
        yield start
    finally:
        for proxy in running:
            await _stop(proxy.process)
        shutil.rmtree(directory, ignore_errors=True)


# -- client helpers -----------------------------------------------------------------------------


def client(source: str | None = None, *, cookies: bool = False) -> aiohttp.ClientSession:
    """A session opening a new connection per request, optionally from ``source``."""
    connector = aiohttp.TCPConnector(
        force_close=True, local_addr=(source, 0) if source is not None else None
    )
    jar: aiohttp.abc.AbstractCookieJar = (
        aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
    )
    return aiohttp.ClientSession(connector=connector, cookie_jar=jar, timeout=REQUEST_TIMEOUT)


async def fetch(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str, str]:
    """(status, body, Location header) without following redirects."""
    async with session.get(url, allow_redirects=False, **kwargs) as response:
        return response.status, await response.text(), response.headers.get("Location", "")


async def names(session: aiohttp.ClientSession, url: str, count: int) -> Counter[str]:
    served: Counter[str] = Counter()
    for _ in range(count):
        status, body, _ = await fetch(session, url)
        assert status == 200, body
        served[body] += 1
    return served


def http_pool(
    b: StateBuilder, listener: str, algorithm: str, servers: list[Member], **pool: Any
) -> str:
    pool_id = b.pool("HTTP", algorithm, listener=listener, **pool)
    for member in servers:
        b.member(pool_id, "127.0.0.1", member.port, name=member.name)
    return pool_id


# -- tests --------------------------------------------------------------------------------------


async def test_round_robin_spreads_evenly(members: Any, haproxy: Any) -> None:
    servers = await members(3)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    http_pool(b, b.listener("HTTP", port), "ROUND_ROBIN", servers)
    proxy = await haproxy(b.build())
    async with client() as session:
        served = await names(session, proxy.url(port), 30)
    assert served == {"m0": 10, "m1": 10, "m2": 10}


async def test_source_ip_is_sticky_per_client_address(members: Any, haproxy: Any) -> None:
    servers = await members(3)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    http_pool(b, b.listener("HTTP", port), "SOURCE_IP", servers)
    proxy = await haproxy(b.build())
    chosen: dict[str, str] = {}
    for last_octet in range(1, 13):
        source = f"127.0.0.{last_octet}"
        async with client(source) as session:
            served = await names(session, proxy.url(port), 5)
        assert len(served) == 1, f"{source} was spread: {served}"
        chosen[source] = next(iter(served))
    assert len(set(chosen.values())) >= 2, chosen  # different sources do spread


async def test_source_ip_port_spreads_connections_of_one_address(
    members: Any, haproxy: Any
) -> None:
    servers = await members(3)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    http_pool(b, b.listener("HTTP", port), "SOURCE_IP_PORT", servers)
    proxy = await haproxy(b.build())
    async with client() as session:  # a new connection, hence source port, per request
        served = await names(session, proxy.url(port), 24)
    assert len(served) >= 2, served
    # One keep-alive connection keeps its source port, hence its member.
    keepalive = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=keepalive, timeout=REQUEST_TIMEOUT) as session:
        assert len(await names(session, proxy.url(port), 6)) == 1


@pytest.mark.parametrize(("algorithm", "busy_hits"), [("LEAST_CONNECTIONS", 1), ("ROUND_ROBIN", 5)])
async def test_least_connections_favours_the_idle_member(
    members: Any, haproxy: Any, algorithm: str, busy_hits: int
) -> None:
    """m0 holds every request it gets; under leastconn it gets one, then only m1 is idle.
    Round robin, the control, keeps feeding the busy member."""
    busy, idle = await members(2)
    busy.holding = True
    b = StateBuilder(VIP)
    port = free_port(VIP)
    http_pool(b, b.listener("HTTP", port), algorithm, [busy, idle])
    proxy = await haproxy(b.build())
    async with client() as session:
        pending = []
        for _ in range(10):
            pending.append(asyncio.create_task(fetch(session, proxy.url(port))))
            await asyncio.sleep(0.05)  # the idle member answers at once; the busy one holds
        assert (busy.hits, idle.hits) == (busy_hits, 10 - busy_hits)
        busy.release.set()
        results = await asyncio.gather(*pending)
    assert all(status == 200 for status, _, _ in results)


async def test_admin_down_member_gets_no_traffic(members: Any, haproxy: Any) -> None:
    servers = await members(3)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    pool = b.pool("HTTP", "ROUND_ROBIN", listener=b.listener("HTTP", port))
    for member in servers:
        b.member(pool, "127.0.0.1", member.port, admin_state_up=member is not servers[1])
    proxy = await haproxy(b.build())
    async with client() as session:
        served = await names(session, proxy.url(port), 20)
    assert served == {"m0": 10, "m2": 10}
    assert servers[1].hits == 0


async def test_http_monitor_takes_a_killed_member_out(members: Any, haproxy: Any) -> None:
    alive, doomed = await members(2)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    pool = http_pool(b, b.listener("HTTP", port), "ROUND_ROBIN", [alive, doomed])
    b.monitor(
        pool,
        "HTTP",
        url_path="/health",
        expected_codes="200-204",
        delay=1,
        timeout=1,
        max_retries=1,
        max_retries_down=1,
    )
    state = b.build()
    listener_id = next(iter(state.listeners))
    doomed_id = next(m.id for m in state.members.values() if m.protocol_port == doomed.port)
    backend = f"{pool}:{listener_id}"
    proxy = await haproxy(state)
    async with client() as session:
        assert await names(session, proxy.url(port), 4) == {"m0": 2, "m1": 2}
        await doomed.stop()
        deadline = time.monotonic() + 10
        while await proxy.server_status(backend, doomed_id) != "DOWN":
            assert time.monotonic() < deadline, "the monitor never marked the member DOWN"
            await asyncio.sleep(0.1)
        assert await names(session, proxy.url(port), 10) == {"m0": 10}


@pytest.fixture
def vanishing_host() -> Iterator[Callable[[bool], None]]:
    """A test-made address, ``PING_HOST``, on ``lo``; ``present(False)`` takes it away (a
    blackhole route then fails every packet to it locally), ``present(True)`` brings it back.
    The address and the route are removed after the test, also when it fails."""
    host = f"{PING_HOST}/32"

    def ip(*args: str, check: bool = True) -> None:
        subprocess.run(["ip", *args], check=check, capture_output=True)

    def present(yes: bool) -> None:
        ip("addr", "add" if yes else "del", host, "dev", "lo")

    ip("route", "add", "blackhole", host)
    try:
        present(True)
        yield present
    finally:
        ip("addr", "del", host, "dev", "lo", check=False)
        ip("route", "del", "blackhole", host, check=False)


async def test_ping_monitor_takes_out_a_host_that_stops_answering(
    members: Any, haproxy: Any, vanishing_host: Callable[[bool], None], tmp_path: Path
) -> None:
    """PING runs the agent's check script (as Octavia's ping wrapper); the server's host, not its
    port, decides: a host that stops answering goes DOWN, and UP again when it answers."""
    check = write_ping_check(tmp_path / "ping-check.sh")
    assert check is not None, "ping is missing (make sysdeps installs iputils-ping)"
    local = (await members(1))[0]
    remote = Member("m1", host=PING_HOST)
    await remote.start()
    try:
        b = StateBuilder(VIP)
        port = free_port(VIP)
        pool = b.pool("HTTP", "ROUND_ROBIN", listener=b.listener("HTTP", port))
        b.member(pool, "127.0.0.1", local.port, name=local.name)
        remote_id = b.member(pool, PING_HOST, remote.port, name=remote.name)
        b.monitor(pool, "PING", delay=1, timeout=1, max_retries=1, max_retries_down=1)
        state = b.build()
        backend = f"{pool}:{next(iter(state.listeners))}"
        proxy = await haproxy(state, external_check_command=str(check))

        async def settle(expected: str) -> None:
            deadline = time.monotonic() + 10
            while (status := await proxy.server_status(backend, remote_id)) != expected:
                assert time.monotonic() < deadline, f"{remote_id} stayed {status}\n{proxy.log()}"
                await asyncio.sleep(0.1)

        async with client() as session:
            await settle("UP")
            assert await names(session, proxy.url(port), 4) == {"m0": 2, "m1": 2}
            vanishing_host(False)
            await settle("DOWN")
            assert await names(session, proxy.url(port), 6) == {"m0": 6}
            vanishing_host(True)
            await settle("UP")
            assert await names(session, proxy.url(port), 4) == {"m0": 2, "m1": 2}
    finally:
        await remote.stop()


async def test_l7_policies_route_redirect_and_reject(members: Any, haproxy: Any) -> None:
    default, api, static = await members(3)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    listener = b.listener("HTTP", port)
    http_pool(b, listener, "ROUND_ROBIN", [default])
    api_pool = b.pool("HTTP")
    b.member(api_pool, "127.0.0.1", api.port)
    static_pool = b.pool("HTTP")
    b.member(static_pool, "127.0.0.1", static.port)
    weird = 'a b "c" $HOME #x'

    admin = b.policy(listener, "REJECT", 1)
    b.rule(admin, "PATH", "STARTS_WITH", "/admin")
    moved = b.policy(
        listener,
        "REDIRECT_TO_URL",
        2,
        redirect_url="https://new.example.com/welcome?from=old%20site",
        redirect_http_code=301,
    )
    b.rule(moved, "HOST_NAME", "EQUAL_TO", "OLD.example.com")
    to_api = b.policy(listener, "REDIRECT_TO_POOL", 3, redirect_pool_id=api_pool)
    b.rule(to_api, "PATH", "REGEX", "^/api/v[0-9]+/")
    to_static = b.policy(listener, "REDIRECT_TO_POOL", 4, redirect_pool_id=static_pool)
    b.rule(to_static, "HEADER", "EQUAL_TO", weird, key="X-Route")
    b.rule(to_static, "PATH", "STARTS_WITH", "/private", invert=True)
    legacy = b.policy(listener, "REDIRECT_PREFIX", 5, redirect_prefix="https://legacy.example.com")
    b.rule(legacy, "COOKIE", "EQUAL_TO", "1", key="legacy")
    executables = b.policy(listener, "REJECT", 6)
    b.rule(executables, "FILE_TYPE", "EQUAL_TO", "exe")
    proxy = await haproxy(b.build())

    async with client() as session:
        url = proxy.url

        async def outcome(path: str, **kwargs: Any) -> tuple[int, str, str]:
            return await fetch(session, url(port, path), **kwargs)

        assert (await outcome("/"))[:2] == (200, "m0")
        assert (await outcome("/admin/users"))[0] == 403
        assert await outcome("/", headers={"Host": "old.example.com"}) == (
            301,
            "",
            "https://new.example.com/welcome?from=old%20site",
        )
        # Position 1 beats position 2 when both match.
        assert (await outcome("/admin", headers={"Host": "old.example.com"}))[0] == 403
        assert (await outcome("/api/v2/items"))[:2] == (200, "m1")
        assert (await outcome("/api/vx/items"))[:2] == (200, "m0")
        assert (await outcome("/page", headers={"X-Route": weird}))[:2] == (200, "m2")
        assert (await outcome("/page", headers={"X-Route": "a b"}))[:2] == (200, "m0")
        assert (await outcome("/private", headers={"X-Route": weird}))[:2] == (200, "m0")
        status, _, location = await outcome("/old/page?q=1", headers={"Cookie": "legacy=1"})
        assert (status, location) == (302, "https://legacy.example.com/old/page?q=1")
        assert (await outcome("/setup.exe"))[0] == 403
        # An earlier pool policy wins over a later REJECT: first match, not action kind.
        assert (await outcome("/api/v1/setup.exe"))[:2] == (200, "m1")


async def test_http_cookie_keeps_a_client_on_one_member(members: Any, haproxy: Any) -> None:
    servers = await members(3)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    http_pool(
        b,
        b.listener("HTTP", port),
        "ROUND_ROBIN",
        servers,
        session_persistence=SessionPersistence(type="HTTP_COOKIE"),
    )
    proxy = await haproxy(b.build())
    for _ in range(3):
        async with client(cookies=True) as session:
            served = await names(session, proxy.url(port), 8)
            assert len(served) == 1, served
            assert any(cookie.key == "SRV" for cookie in session.cookie_jar)
    async with client() as session:  # without the cookie, round robin
        assert len(await names(session, proxy.url(port), 6)) == 3


async def test_allowed_cidrs_reject_other_sources(members: Any, haproxy: Any) -> None:
    servers = await members(1)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    listener = b.listener("HTTP", port, allowed_cidrs=("127.0.0.1/32",))
    http_pool(b, listener, "ROUND_ROBIN", servers)
    proxy = await haproxy(b.build())
    async with client("127.0.0.1") as session:
        assert (await fetch(session, proxy.url(port)))[:2] == (200, "m0")
    async with client(OUTSIDER) as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(session, proxy.url(port))
    assert servers[0].hits == 1


async def test_terminated_https_serves_the_crt_list_certificate(
    members: Any, haproxy: Any, tmp_path: Path
) -> None:
    servers = await members(1)
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    cert, key = ca.issue_server_cert("vip", [VIP])
    (tmp_path / "vip.pem").write_bytes(cert + key)
    (tmp_path / "vip.crtlist").write_text(f"{tmp_path / 'vip.pem'}\n")
    b = StateBuilder(VIP)
    port = free_port(VIP)
    listener = b.listener(
        "TERMINATED_HTTPS",
        port,
        hsts_max_age=600,
        insert_headers={"X-Forwarded-Proto": "true"},
    )
    http_pool(b, listener, "ROUND_ROBIN", servers)
    proxy = await haproxy(
        b.build(), listener_tls={listener: ListenerTlsFiles(crt_list=str(tmp_path / "vip.crtlist"))}
    )
    trust = ssl.create_default_context(cafile=str(ca.cert_path))
    async with client() as session:
        url = f"https://{VIP}:{port}/"
        async with session.get(url, ssl=trust) as response:
            assert (response.status, await response.text()) == (200, "m0")
            assert response.headers["Strict-Transport-Security"] == "max-age=600;"
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(session, proxy.url(port))  # plain HTTP is not served


async def test_escaped_strings_reach_haproxy_unchanged(tmp_path: Path) -> None:
    """Each escaping layer round-trips: HAProxy answers with exactly the original text."""
    values = [HOSTILE, "plain", "100% \\\\ 'x' \"y\" ${A} $B #c", "-m str", "a,b)c("]
    port = free_port(VIP)
    lines = [
        "defaults",
        "    mode http",
        "    timeout client 5s",
        "    timeout server 5s",
        "    timeout connect 5s",
        "frontend echo",
        f"    bind {VIP}:{port}",
    ]
    answer = "    http-request return status 200 content-type text/plain"
    for index, value in enumerate(values):
        word = f"str({sample_arg(value)})"
        lines += [
            f"{answer} string {haproxy_escape(value)} if {{ path /word/{index} }}",
            f"    http-request set-var(txn.v{index}) {haproxy_escape(word)}",
            # Log-format output would re-encode control characters: compare inside HAProxy.
            f"{answer} string matched if {{ path /arg/{index} }}"
            f" {{ var(txn.v{index}) -m str -- {haproxy_escape(value)} }}",
            f"{answer} lf-string {haproxy_escape(logformat_escape(value))}"
            f" if {{ path /lf/{index} }}",
        ]
    config = tmp_path / "echo.cfg"
    config.write_text("\n".join(lines) + "\n")
    log = tmp_path / "echo.log"
    with open(log, "wb") as output:
        process = await asyncio.create_subprocess_exec(
            str(HAPROXY),
            "-db",
            "-f",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        async with client() as session:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    await fetch(session, f"http://{VIP}:{port}/word/0")
                    break
                except aiohttp.ClientConnectionError:
                    assert process.returncode is None, log.read_text()
                    assert time.monotonic() < deadline, "haproxy did not start"
                    await asyncio.sleep(0.02)
            for index, value in enumerate(values):
                for layer, expected in (("word", value), ("arg", "matched"), ("lf", value)):
                    url = f"http://{VIP}:{port}/{layer}/{index}"
                    assert (await fetch(session, url))[:2] == (200, expected), (layer, value)
    finally:
        await _stop(process)
