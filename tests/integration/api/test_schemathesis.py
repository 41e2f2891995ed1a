"""Schema fuzzing: schemathesis drives every operation of the OpenAPI document the API serves
against the real API (real Postgres and NATS, noauth, on 127.0.0.1); no answer may be a 5xx,
except Octavia's 501 by which the provider refuses an option it does not support, and every
answer (errors included) must match the document's schema and content type.

Bounded and deterministic: a fixed seed, derandomized Hypothesis, few examples per operation,
no example database. The API runs in a thread with its own event loop, since schemathesis
calls it synchronously.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from aiohttp import web

from deploy.local.embedded import EmbeddedNats, create_database, drop_database
from libs.common.events.visibility import FEED_PATH
from services.api.app import ROUTE_MODULES, create_app
from services.api.http.resources.openapi import build_document
from services.api.http.routing import ApiRouter
from tests.integration.api.conftest import api_settings

# Every answer's body matches its documented schema (the error shapes too) and content type.
CONFORMANCE = [
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.content_type_conformance,
]
SEED = 20261123
MAX_EXAMPLES = 30
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "request-timeout": 20,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            "mode": "all",
        },
        "phases": {"stateful": {"enabled": False}},
    }
)


class ServedApi:
    """The API app on 127.0.0.1 in a thread with its own loop; ``stop`` cleans everything."""

    def __init__(self, pg_server_dsn: str, nats_dir: Path) -> None:
        self._admin_dsn = pg_server_dsn
        self._database = f"t_{uuid.uuid4().hex}"
        self._nats = EmbeddedNats(nats_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.base = ""

    def start(self) -> str:
        nats_url = self._nats.start()
        self._thread.start()
        self.base = self._run(self._start(nats_url))
        return self.base

    async def _start(self, nats_url: str) -> str:
        dsn = await create_database(self._admin_dsn, self._database)
        # A sealing key, so the key manager (Barbican subset) is served and fuzzed too.
        key = base64.urlsafe_b64encode(bytes(range(32))).decode()
        app = create_app(api_settings(dsn, nats_url, access_log=False, secret_keys=key))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _stop(self) -> None:
        try:
            if self._runner is not None:
                await self._runner.cleanup()
        finally:
            await drop_database(self._admin_dsn, self._database)

    def _run(self, coro: object) -> str:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        result: str = future.result(timeout=60)
        return result

    def stop(self) -> None:
        try:
            if self._thread.is_alive():
                asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()
            self._nats.stop()


@pytest.fixture(scope="module")
def served_api(pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ServedApi(pg_server_dsn, tmp_path_factory.mktemp("schemathesis-nats"))
    try:
        yield server.start()
    finally:
        server.stop()


def route_specs() -> ApiRouter:
    """The routes ``create_app`` registers, on a router of their own (nothing starts)."""
    api = ApiRouter(web.UrlDispatcher())
    for register in ROUTE_MODULES:
        register(api)
    return api


# Built at collection so that every operation is its own test; test_served_document_is_fuzzed
# checks that the API serves exactly this document.
DOCUMENT = build_document(route_specs().specs, "http://127.0.0.1")
# The live event feed answers a stream that lasts until the client leaves, so it is no
# request/response operation to fuzz; test_event_feed.py covers its every bad input.
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG).exclude(path=FEED_PATH)


def test_served_document_is_fuzzed(served_api: str) -> None:
    with urllib.request.urlopen(f"{served_api}/openapi.json", timeout=10) as reply:
        served = json.load(reply)
    assert served["servers"] == [{"url": served_api}]
    assert {**served, "servers": DOCUMENT["servers"]} == DOCUMENT


@pytest.mark.timeout(300)
@schema.parametrize()
def test_no_operation_answers_5xx(case: schemathesis.Case, served_api: str) -> None:
    response = case.call(base_url=served_api, timeout=20)
    where = f"{response.status_code} {response.text[:500]}\n{case.as_curl_command()}"
    if response.status_code == 501:
        # Octavia's deliberate answer when the amphora provider cannot honour an option
        # (additional_vips, SOURCE_IP_PORT, unsupported flavor data): a refusal, not a failure.
        assert response.json()["faultstring"].startswith("Provider 'amphora'"), where
        return
    assert response.status_code < 500, where
    if "fields" not in (case.query or {}):  # a field selection answers part of a body
        case.validate_response(response, checks=CONFORMANCE)
