"""Tools to break a running ``fulcrum up`` stack and measure what its users see.

``VipProber`` sends one request at a time to every VIP on fresh connections and records each
failure; ``Tenant`` drives the API as a patient user (retries while the API is restarting);
``kill`` SIGKILLs supervised parts by the pids supervisord reports; ``wait_ready`` polls the
stack's own readiness (``fulcrum status``). Shared by tests/e2e/test_chaos.py and
bench/bench_resilience.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from deploy.local.state import StackError, StackPaths
from deploy.local.status import StackStatus, collect_status
from deploy.local.supervision import SupervisorClient

DEFAULT_SUBNET = "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"
SERVICES = ("api", "provisioner", "health", "housekeeping")


def pids(state: Path) -> dict[str, int]:
    """Pid of every running supervised part, by name."""
    client = SupervisorClient(StackPaths(state).supervisor_socket)
    return {info.name: info.pid for info in client.processes() if info.pid}


def kill(state: Path, names: Iterable[str]) -> dict[str, int]:
    """SIGKILL the named parts at once; returns the pids killed."""
    victims = {name: pid for name, pid in pids(state).items() if name in set(names)}
    for pid in victims.values():
        os.kill(pid, signal.SIGKILL)
    return victims


async def wait_ready(
    state: Path, timeout: float = 60.0, after: dict[str, int] | None = None
) -> float:
    """Poll ``fulcrum status`` until every part is ready (and, with ``after``, none of those
    parts still has its old pid); returns the seconds waited."""
    start = time.monotonic()
    last: StackStatus | str = ""
    while time.monotonic() - start < timeout:
        try:
            last = await asyncio.to_thread(collect_status, StackPaths(state), 1.0)
        except StackError as exc:
            last = str(exc)
        else:
            replaced = after is None or all(
                p.pid not in (None, after[p.name]) for p in last.parts if p.name in after
            )
            if last.ready and replaced:
                return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"stack not ready after {timeout} s: {last}")


class BackgroundProbe:
    """A probe loop (``_run``) run as a task between ``start`` and ``stop``."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        raise NotImplementedError


@dataclass
class VipProber(BackgroundProbe):
    """Requests every VIP in turn, one at a time each, on a new connection every time.

    Bounded: stops after ``max_seconds`` or ``max_requests`` whatever happens.
    """

    interval: float = 0.05
    max_seconds: float = 900.0
    max_requests: int = 500_000
    vips: dict[str, str] = field(default_factory=dict)  # lb_id -> http://vip/
    sent: int = 0
    failures: list[tuple[float, str, str]] = field(default_factory=list)  # (time, lb_id, why)

    def failures_since(self, since: float, lb_ids: Iterable[str]) -> list[tuple[float, str, str]]:
        wanted = set(lb_ids)
        return [f for f in self.failures if f[0] >= since and f[1] in wanted]

    async def _one(self, session: aiohttp.ClientSession, lb_id: str, url: str) -> None:
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                await resp.read()
                if resp.status != 200:
                    self.failures.append((time.monotonic(), lb_id, f"HTTP {resp.status}"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failures.append((time.monotonic(), lb_id, repr(exc)))

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.monotonic() < deadline and self.sent < self.max_requests:
                targets = list(self.vips.items())
                if targets:
                    await asyncio.gather(*(self._one(session, lb, url) for lb, url in targets))
                    self.sent += len(targets)
                await asyncio.sleep(self.interval)


class Tenant:
    """The API as a patient user drives it: a request refused because the API restarts, or
    answered 503, is sent again (bounded); a create that may have landed is looked up by its
    unique name before being sent again."""

    def __init__(self, session: aiohttp.ClientSession, api_url: str, token: str) -> None:
        self._session = session
        self._api = api_url
        self._headers = {"X-Auth-Token": token}
        self.retries = 0

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 60
    ) -> tuple[int, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with self._session.request(
                    method,
                    self._api + path,
                    json=body,
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as resp:
                    payload = await resp.json() if resp.status != 204 else None
                    if resp.status != 503:
                        return resp.status, payload
            except (aiohttp.ClientConnectionError, TimeoutError):
                if method not in ("GET", "PUT", "DELETE"):
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path}: API unavailable for {timeout} s")
            self.retries += 1
            await asyncio.sleep(0.2)

    async def lb_by_name(self, name: str) -> dict[str, Any] | None:
        status, body = await self.call("GET", f"/v2/lbaas/loadbalancers?name={name}")
        assert status == 200, body
        found: list[dict[str, Any]] = body["loadbalancers"]
        return found[0] if found else None

    async def create_lb(self, name: str, member_port: int, *, timeout: float = 60) -> str:
        """A whole LB graph in one call (HTTP listener on 80, one member); returns its id."""
        body = {
            "loadbalancer": {
                "name": name,
                "vip_subnet_id": DEFAULT_SUBNET,
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "protocol_port": 80,
                        "default_pool": {
                            "name": f"{name}-pool",
                            "protocol": "HTTP",
                            "lb_algorithm": "ROUND_ROBIN",
                            "members": [{"address": "127.0.0.1", "protocol_port": member_port}],
                        },
                    }
                ],
            }
        }
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, created = await self.call("POST", "/v2/lbaas/loadbalancers", body)
            except (aiohttp.ClientConnectionError, TimeoutError):
                # The API died with the request in flight: it landed or it did not.
                existing = await self.lb_by_name(name)
                if existing is not None:
                    return str(existing["id"])
                if time.monotonic() > deadline:
                    raise
                self.retries += 1
                await asyncio.sleep(0.2)
                continue
            assert status == 201, (status, created)
            return str(created["loadbalancer"]["id"])

    async def rename(self, lb_id: str, *, timeout: float = 60) -> None:
        """An update of the LB (its description); waits out 409s of an LB busy with another."""
        deadline = time.monotonic() + timeout
        body = {"loadbalancer": {"description": f"chaos {uuid.uuid4().hex[:8]}"}}
        while True:
            status, answer = await self.call("PUT", f"/v2/lbaas/loadbalancers/{lb_id}", body)
            if status == 200:
                return
            assert status == 409 and time.monotonic() < deadline, (status, answer)
            await asyncio.sleep(0.1)

    async def wait_active(self, lb_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        lb: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, body = await self.call("GET", f"/v2/lbaas/loadbalancers/{lb_id}")
            assert status == 200, body
            lb = body["loadbalancer"]
            if lb["provisioning_status"] == "ACTIVE":
                return lb
            assert lb["provisioning_status"] != "ERROR", lb
            await asyncio.sleep(0.1)
        raise AssertionError(f"LB {lb_id} not ACTIVE after {timeout} s: {lb}")

    async def delete(self, lb_id: str) -> None:
        status, body = await self.call("DELETE", f"/v2/lbaas/loadbalancers/{lb_id}?cascade=true")
        assert status in (204, 404), (status, body)
