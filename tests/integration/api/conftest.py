"""The API on a real Postgres and NATS, served on 127.0.0.1 (port 0) and driven over HTTP.

`api` is a running app with the default noauth strategy; `make_api` starts more (other
settings). Tests stand in for the provisioner by applying its commands through the repository
(`api.activate(lb_id)`, `api.settle(lb_id)`, ...).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from libs.common.domain import commands as c
from libs.common.events import Metadata
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import LoadBalancerRepository
from libs.common.service import DB
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings
from services.api.app import create_app
from services.api.settings import ApiSettings

SUBNET = "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"
NETWORK = "0c9a4e2b-8d7f-4f6e-a1b2-3c4d5e6f7a81"
PROVISIONER = Metadata(actor="test-provisioner")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def fault(self) -> str:
        assert isinstance(self.body, dict) and set(self.body) == {
            "faultcode",
            "faultstring",
            "debuginfo",
        }, self.body
        return str(self.body["faultstring"])


class Api:
    """HTTP client of one running API app, plus the provisioner's commands."""

    def __init__(self, app: web.Application, base: str, session: aiohttp.ClientSession) -> None:
        self.app = app
        self.base = base
        self.session = session
        self.repo = LoadBalancerRepository(PostgresEventStore(app[DB]))

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        expect: int | None = None,
    ) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        url = path if path.startswith("http") else self.base + path
        async with self.session.request(method, url, data=data, headers=hdrs) as resp:
            text = await resp.text()
            parsed = json.loads(text) if text else None
            reply = Reply(resp.status, parsed, dict(resp.headers))
        if expect is not None:
            assert reply.status == expect, (method, path, reply.status, reply.body)
        return reply

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any, **kw: Any) -> Reply:
        return await self.call("POST", path, body, **kw)

    async def put(self, path: str, body: Any, **kw: Any) -> Reply:
        return await self.call("PUT", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)

    # -- shortcuts -------------------------------------------------------------------------

    async def create_lb(self, active: bool = True, **fields: Any) -> dict[str, Any]:
        body = {"vip_subnet_id": SUBNET, **fields}
        lb = (await self.post("/v2/lbaas/loadbalancers", {"loadbalancer": body}, expect=201)).body
        if active:
            await self.activate(lb["loadbalancer"]["id"])
        return dict(lb["loadbalancer"])

    async def create(self, collection: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        """POST one child, returning the created body (its LB stays PENDING_UPDATE)."""
        reply = await self.post(f"/v2/lbaas/{collection}", {key: fields}, expect=201)
        return dict(reply.body[key])

    async def create_listener(self, lb_id: str) -> dict[str, Any]:
        """An HTTP listener on port 80 of ``lb_id``, its LB settled (ACTIVE again)."""
        fields = {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80}
        listener = await self.create("listeners", "listener", fields)
        await self.settle(lb_id)
        return listener

    async def activate(self, lb_id: str) -> None:
        await self.repo.execute(lb_id, c.Activate(amphora_ids=("amp-1",)), PROVISIONER)

    async def settle(self, lb_id: str) -> None:
        await self.repo.execute(lb_id, c.ApplyChanges(), PROVISIONER)

    async def fail(self, lb_id: str, reason: str = "boom") -> None:
        await self.repo.execute(lb_id, c.FailProvisioning(reason=reason), PROVISIONER)

    async def complete_deletion(self, lb_id: str) -> None:
        await self.repo.execute(lb_id, c.CompleteDeletion(), PROVISIONER)


def api_settings(pg_dsn: str, nats_url: str, **overrides: Any) -> ApiSettings:
    overrides.setdefault("auth_strategy", "noauth")
    return ApiSettings(
        postgres=PostgresSettings(dsn=pg_dsn, max_pool=10),
        nats=NatsSettings(url=nats_url),
        relay=RelaySettings(poll_interval=0.5),
        port=0,
        **overrides,
    )


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(pg_dsn: str, nats_url: str) -> AsyncIterator[MakeApi]:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**overrides: Any) -> Api:
        app = create_app(api_settings(pg_dsn, nats_url, **overrides))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Api(app, f"http://127.0.0.1:{port}", session)

    try:
        yield start
    finally:
        for session in sessions:
            await session.close()
        for runner in reversed(runners):
            await runner.cleanup()


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()
