"""The API (``testing`` auth: projects and roles from headers) and, for data-plane tests, a
provisioner with the process driver, sharing one Postgres, one NATS and the key manager's key.
Backends are real HTTP(S) servers on 127.0.0.1 that echo what reached them."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from libs.common.secretstore import new_key
from services.api.app import create_app as create_api
from services.provisioner.app import CONFIGURATOR, DRIVER
from services.provisioner.app import create_app as create_provisioner
from tests.integration.api.conftest import SUBNET, Api, Reply, api_settings
from tests.integration.provisioner.conftest import free_port, provisioner_settings
from tests.integration.tls.pki import CertAuthority, Issued

PROJECT_A = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
PROJECT_B = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
LB_TIMEOUT = 60.0


@pytest.fixture
def secret_keys() -> str:
    return new_key()


@dataclass
class Tenant:
    """One project's member (or ``roles``) talking to the API."""

    api: Api
    project: str
    roles: str = "member"

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Reply:
        headers = {"X-Project-Id": self.project, "X-Roles": self.roles, **kw.pop("headers", {})}
        return await self.api.call(method, path, body, headers=headers, **kw)

    async def secret(
        self, payload: str | bytes, name: str | None = None, secret_type: str = "opaque"
    ) -> str:
        body: dict[str, Any] = {"name": name, "secret_type": secret_type}
        if isinstance(payload, bytes):
            body.update(
                payload=base64.b64encode(payload).decode(),
                payload_content_type="application/octet-stream",
                payload_content_encoding="base64",
            )
        else:
            body.update(payload=payload, payload_content_type="text/plain")
        reply = await self.call("POST", "/v1/secrets/", body, expect=201)
        return str(reply.body["secret_ref"])

    async def container(self, refs: dict[str, str], *, kind: str = "certificate") -> str:
        body = {
            "name": "c",
            "type": kind,
            "secret_refs": [{"name": n, "secret_ref": r} for n, r in refs.items()],
        }
        reply = await self.call("POST", "/v1/containers/", body, expect=201)
        return str(reply.body["container_ref"])

    async def tls_container(
        self,
        issued: Issued,
        *,
        intermediates: bytes | None = None,
        passphrase: bytes | None = None,
    ) -> str:
        key = issued.encrypted_key_pem(passphrase) if passphrase else issued.key_pem
        refs = {
            "certificate": await self.secret(issued.cert_pem.decode()),
            "private_key": await self.secret(key.decode()),
        }
        if intermediates:
            refs["intermediates"] = await self.secret(intermediates.decode())
        if passphrase:
            refs["private_key_passphrase"] = await self.secret(passphrase.decode())
        return await self.container(refs)

    async def create_lb(self, listeners: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"loadbalancer": {"vip_subnet_id": SUBNET, "listeners": listeners}}
        reply = await self.call("POST", "/v2/lbaas/loadbalancers", body, expect=201)
        return dict(reply.body["loadbalancer"])

    async def wait_lb(self, lb_id: str, wanted: str = "ACTIVE") -> dict[str, Any]:
        deadline = time.monotonic() + LB_TIMEOUT
        while True:
            reply = await self.call("GET", f"/v2/lbaas/loadbalancers/{lb_id}")
            lb = reply.body["loadbalancer"]
            if lb["provisioning_status"] == wanted:
                return dict(lb)
            if lb["provisioning_status"] == "ERROR" or time.monotonic() > deadline:
                raise AssertionError(f"LB {lb_id}: {lb['provisioning_status']} ({lb})")
            await asyncio.sleep(0.1)


@dataclass
class KeyManagerApi:
    api: Api
    a: Tenant
    b: Tenant


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(pg_dsn: str, nats_url: str) -> AsyncIterator[MakeApi]:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**overrides: Any) -> Api:
        overrides.setdefault("auth_strategy", "testing")
        app = create_api(api_settings(pg_dsn, nats_url, **overrides))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Api(app, f"http://127.0.0.1:{runner.addresses[0][1]}", session)

    try:
        yield start
    finally:
        for session in sessions:
            await session.close()
        for runner in reversed(runners):
            await runner.cleanup()


@pytest.fixture
async def km(make_api: MakeApi, secret_keys: str) -> KeyManagerApi:
    api = await make_api(secret_keys=secret_keys)
    return KeyManagerApi(api, Tenant(api, PROJECT_A), Tenant(api, PROJECT_B))


@dataclass
class Provisioner:
    app: web.Application

    async def agent(self, lb_id: str) -> Any:
        """The agent client of the LB's amphora and its info."""
        handles = [h for h in await self.app[DRIVER].list() if h.lb_id == lb_id]
        assert len(handles) == 1, handles
        configurator = self.app[CONFIGURATOR]
        return configurator.client(handles[0]), await configurator.info(handles[0])


@pytest.fixture
async def provisioner(
    pg_dsn: str, nats_url: str, tmp_path: Path, secret_keys: str
) -> AsyncIterator[Provisioner]:
    settings = provisioner_settings(pg_dsn, nats_url, tmp_path).model_copy(
        update={"secret_keys": secret_keys}
    )
    app = create_provisioner(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Provisioner(app)
    finally:
        driver = app[DRIVER]
        for handle in await driver.list():
            await driver.delete(handle.amphora_id)
        await runner.cleanup()


@dataclass
class Backend:
    """An HTTP(S) server answering JSON: its name, the request's headers, the TLS peer."""

    name: str
    port: int
    hits: int = 0
    peers: list[str | None] = field(default_factory=list)


async def _start_backend(
    name: str, runners: list[web.AppRunner], tls: ssl.SSLContext | None = None
) -> Backend:
    backend = Backend(name, free_port())

    async def answer(request: web.Request) -> web.Response:
        backend.hits += 1
        peer = None
        transport_ssl = (
            request.transport.get_extra_info("ssl_object") if request.transport else None
        )
        if transport_ssl is not None:
            cert = transport_ssl.getpeercert()
            if cert:
                peer = dict(x[0] for x in cert["subject"]).get("commonName")
        backend.peers.append(peer)
        # HAProxy sends header names in lower case.
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-")}
        return web.json_response({"name": name, "headers": headers, "peer": peer})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", backend.port, ssl_context=tls).start()
    runners.append(runner)
    return backend


StartBackend = Callable[..., Awaitable[Backend]]


@pytest.fixture
async def backends() -> AsyncIterator[StartBackend]:
    runners: list[web.AppRunner] = []

    async def start(name: str, tls: ssl.SSLContext | None = None) -> Backend:
        return await _start_backend(name, runners, tls)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
def ca() -> CertAuthority:
    return CertAuthority()


def client_context(
    ca: CertAuthority | None = None,
    *,
    client: Issued | None = None,
    tmp: Path | None = None,
    alpn: list[str] | None = None,
    maximum: ssl.TLSVersion | None = None,
    minimum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client context trusting ``ca`` (hostname checked), optionally presenting ``client``."""
    context = ssl.create_default_context()
    if ca is not None:
        context.load_verify_locations(cadata=ca.cert_pem.decode())
    if client is not None:
        assert tmp is not None
        cert, key = client.write(tmp, f"client-{client.cert.serial_number}")
        context.load_cert_chain(str(cert), str(key))
    if alpn:
        context.set_alpn_protocols(alpn)
    with warnings.catch_warnings():
        # Python deprecates TLS 1.0/1.1; the tests offer them on purpose, to see them refused.
        warnings.simplefilter("ignore", DeprecationWarning)
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
    return context


async def handshake(
    host: str, port: int, context: ssl.SSLContext, server_name: str
) -> tuple[ssl.SSLObject, asyncio.StreamWriter]:
    """A TLS connection (the caller closes the writer)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=server_name), 10
    )
    ssl_object = writer.get_extra_info("ssl_object")
    assert ssl_object is not None
    return ssl_object, writer


async def https_get(
    url: str, context: ssl.SSLContext, *, host: str | None = None
) -> tuple[int, Any]:
    """One GET over a new connection (``host`` sets SNI through the Host header)."""
    headers = {"Connection": "close"}
    if host is not None:
        headers["Host"] = host
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"ssl": context, "headers": headers}
        if host is not None:
            kwargs["server_hostname"] = host
        async with session.get(url, **kwargs) as response:
            text = await response.text()
            return response.status, json.loads(text) if text.startswith("{") else text


__all__ = ["PROJECT_A", "PROJECT_B", "free_port"]
