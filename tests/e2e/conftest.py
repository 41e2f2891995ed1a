"""The stack as a user runs it: ``fulcrum up`` in a subprocess, real clients against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
from aiohttp import web

from libs.common.settings import NatsSettings

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    state: Path
    api_url: str
    clouds_yaml: Path
    pg_dsn: str
    nats_url: str
    proc: subprocess.Popen[bytes]

    def secret(self, name: str) -> str:
        return (self.state / name).read_text().strip()

    def ports(self) -> dict[str, int]:
        ports: dict[str, int] = json.loads((self.state / "ports.json").read_text())
        return ports

    def nats_settings(self, user: str) -> NatsSettings:
        """How ``user`` (a service, or ``events``) logs in to the stack's NATS."""
        return NatsSettings(
            url=self.nats_url,
            user=user,
            password=self.secret(f"nats/credentials/{user}.password"),
            tls_ca_file=str(self.state / "ca" / "ca.pem"),
        )

    def nats_environment(self, service: str) -> dict[str, str]:
        """``FULCRUM_<SERVICE>_NATS__*`` of one more replica of ``service`` on this stack."""
        settings = self.nats_settings(service)
        prefix = f"FULCRUM_{service.upper()}_NATS__"
        return {
            f"{prefix}URL": settings.url,
            f"{prefix}USER": settings.user,
            f"{prefix}PASSWORD": settings.password,
            f"{prefix}TLS_CA_FILE": settings.tls_ca_file,
        }


def start_stack(state: Path, *args: str, timeout: float = 120) -> Stack:
    """``fulcrum up --state-dir state *args`` until it writes ``ready``."""
    state.mkdir(parents=True, exist_ok=True)
    log = open(state / "up.log", "ab")  # noqa: SIM115 (the child's)
    proc = subprocess.Popen(
        [str(VENV_BIN / "fulcrum"), "up", "--state-dir", str(state), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while not (state / "ready").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_stack(proc, state)
            raise AssertionError(f"fulcrum up failed:\n{(state / 'up.log').read_text()}")
        time.sleep(0.2)
    endpoint = (state / "endpoint.txt").read_text()
    pg_dsn = re.search(r"Postgres: (\S+)", endpoint)
    api_url = re.search(r"API \(.*\): (\S+)", endpoint)
    assert pg_dsn is not None and api_url is not None, endpoint
    return Stack(
        state=state,
        api_url=api_url.group(1),
        clouds_yaml=state / "clouds.yaml",
        pg_dsn=pg_dsn.group(1),
        nats_url=(state / "nats.url").read_text().strip(),
        proc=proc,
    )


def stop_stack(proc: subprocess.Popen[bytes], state: Path) -> None:
    """SIGTERM ``fulcrum up`` and wait; then nothing started under ``state`` may remain
    (leftovers are killed, then reported)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    subprocess.run(
        [str(VENV_BIN / "fulcrum"), "down", "--state-dir", str(state)],
        check=False,
        capture_output=True,
    )
    leftovers = subprocess.run(
        ["pgrep", "-f", str(state)], capture_output=True, text=True, check=False
    ).stdout.split()
    described = [
        subprocess.run(
            ["ps", "-o", "pid=,ppid=,stat=,args=", "-p", pid], capture_output=True, text=True
        ).stdout.strip()
        for pid in leftovers
    ]
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    assert not leftovers, f"processes left behind by fulcrum up: {described}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``fulcrum up`` on a free port; stopped at the end, and nothing of it may remain."""
    state = tmp_path_factory.mktemp("stack")
    running = start_stack(state, "--port", str(free_port()))
    try:
        yield running
    finally:
        stop_stack(running.proc, state)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Cli:
    """Runs the real ``openstack`` CLI with a given auth (environment variables only)."""

    env: dict[str, str]
    calls: list[list[str]] = field(default_factory=list)

    async def __call__(self, *args: str, check: bool = True) -> Result:
        self.calls.append(list(args))
        proc = await asyncio.create_subprocess_exec(
            str(VENV_BIN / "openstack"),
            *args,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 360)
        result = Result(proc.returncode or 0, out.decode(), err.decode())
        if check and result.code != 0:
            raise AssertionError(f"openstack {' '.join(args)} exited {result.code}: {result.err}")
        return result

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[CliSession]:
        """A ``CliSession`` with this auth; its commands are recorded in ``calls`` too."""
        proc = await asyncio.create_subprocess_exec(
            str(VENV_BIN / "openstack"),
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            yield CliSession(proc, self.calls)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()  # the shell's end of input: it exits
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# What cmd2 passes through a session's line as it is (shlex.quote's safe set): no quoting, no
# `;` terminator, no `|` or `>` redirection.
_PLAIN_ARGUMENT: Final = re.compile(r"[\w@%+=:,./-]+", re.ASCII)
_END_OF_COMMAND: Final = "__fulcrum_session_end__"


@dataclass
class CliSession:
    """One interactive ``openstack`` (cliff's shell) running commands one after another.

    The same parser, commands and API calls as separate runs, without a Python start and a
    Keystone login per command. A shell has no exit status per command: ``code`` is 1 when
    the command wrote to stderr (where cliff reports a failure), else 0. Arguments must be
    plain tokens (``_PLAIN_ARGUMENT``); anything else raises ValueError.
    """

    proc: asyncio.subprocess.Process
    calls: list[list[str]]

    async def __call__(self, *args: str, check: bool = True) -> Result:
        unplain = [arg for arg in args if not _PLAIN_ARGUMENT.fullmatch(arg)]
        if unplain:
            raise ValueError(f"not a plain argument for a CLI session: {unplain}")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.calls.append(list(args))
        # `!` runs a shell: the marker follows the command's output on both streams.
        end = f"!sh -c 'echo {_END_OF_COMMAND}; echo {_END_OF_COMMAND} >&2'"
        self.proc.stdin.write(f"{' '.join(args)}\n{end}\n".encode())
        await self.proc.stdin.drain()
        out, err = await asyncio.wait_for(
            asyncio.gather(_until_end(self.proc.stdout), _until_end(self.proc.stderr)), 360
        )
        result = Result(1 if err.strip() else 0, out, err)
        if check and result.code != 0:
            raise AssertionError(f"openstack {' '.join(args)} failed: {result.err}")
        return result

    async def apply(self, lb: str, *args: str) -> Result:
        """Run ``*args``, a change to load balancer ``lb`` (its creation, or a child's), then
        wait until ``lb`` is ACTIVE again; the command's result."""
        result = await self(*args)
        await self.wait_for_status("loadbalancer", "show", lb)
        return result

    async def wait_for_status(
        self, *show: str, status: str = "ACTIVE", timeout: float = 120
    ) -> None:
        """Run ``*show -c provisioning_status -f value`` (``loadbalancer show my-lb``, or a
        list: ``status=""`` waits until nothing matches) every 0.1 s until it prints
        ``status``; AssertionError on ERROR or after ``timeout`` s. What ``--wait`` does, at
        0.1 s instead of its fixed 3 s."""
        deadline = time.monotonic() + timeout
        while True:
            seen = (await self(*show, "-c", "provisioning_status", "-f", "value")).out.strip()
            if seen == status:
                return
            if seen == "ERROR" or time.monotonic() > deadline:
                raise AssertionError(f"{' '.join(show)}: {seen}, not {status}")
            await asyncio.sleep(0.1)


async def _until_end(stream: asyncio.StreamReader) -> str:
    lines = []
    while (line := await stream.readline()) != f"{_END_OF_COMMAND}\n".encode():
        if not line:
            raise AssertionError(f"the openstack session ended: {b''.join(lines).decode()}")
        lines.append(line)
    return b"".join(lines).decode()


def cloud_cli(stack: Stack, cloud: str) -> Cli:
    return Cli(
        {
            "OS_CLIENT_CONFIG_FILE": str(stack.clouds_yaml),
            "OS_CLOUD": cloud,
            "PYTHONWARNINGS": "ignore",
        }
    )


@dataclass
class Backend:
    name: str
    port: int
    hits: int = 0


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    """Two HTTP servers on 127.0.0.1 answering their name (the LB's members)."""
    runners: list[web.AppRunner] = []
    out: list[Backend] = []
    for i in range(2):
        backend = Backend(f"backend-{i}", free_port())

        async def answer(request: web.Request, backend: Backend = backend) -> web.Response:
            backend.hits += 1
            return web.Response(text=backend.name)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", backend.port).start()
        runners.append(runner)
        out.append(backend)
    try:
        yield out
    finally:
        for runner in runners:
            await runner.cleanup()
