"""OTLP traces through the whole stack: ``fulcrum up`` with ``OTEL_TRACES_EXPORTER=otlp``
exports to a loopback OTLP/HTTP receiver run by this test, and one LB create is one trace
from the API request through publish, consume and the provisioner's steps to the agent's
HAProxy reload."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.e2e.conftest import Stack, free_port, start_stack, stop_stack
from tests.e2e.test_access_logs import Client

pytestmark = pytest.mark.timeout(300)
WAIT_S = 30.0
# The caller's own trace, which the API continues (W3C trace context).
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
CHILD_TRACE = "5c0a03f4688c45eb97b4d1e0c3a2b6f1"


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    start: int


class OtlpReceiver:
    """POST /v1/traces (OTLP/HTTP, protobuf): every span received, in arrival order."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    async def export(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "?",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        Span(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            service=service,
                            start=span.start_time_unix_nano,
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, int]]:
    otlp = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", otlp.export)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield otlp, port
    finally:
        await runner.cleanup()


@pytest.fixture
def traced_stack(
    receiver: tuple[OtlpReceiver, int],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver[1]}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    monkeypatch.setenv("FULCRUM_LOG_FORMAT", "json")
    state = tmp_path_factory.mktemp("traced-stack")
    running = start_stack(state, "--port", str(free_port()))
    try:
        yield running
    finally:
        stop_stack(running.proc, state)


def span_tree(spans: list[Span]) -> str:
    """The spans of one trace as an indented tree, children by start time."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else ""
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start):
            lines.append(f"{'  ' * depth}{span.name}  [{span.service}]")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def path_to_root(span: Span, spans: list[Span]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    names = [span.name]
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        names.append(span.name)
    return names[::-1]


async def test_one_lb_create_is_one_trace_from_the_api_to_the_haproxy_reload(
    traced_stack: Stack, receiver: tuple[OtlpReceiver, int]
) -> None:
    otlp, _ = receiver
    async with aiohttp.ClientSession() as session:
        api = Client(traced_stack, session)
        subnet = (await api.call("GET", "/v2.0/subnets?name=public-subnet"))["subnets"][0]["id"]
        async with session.post(
            f"{api.base}/v2/lbaas/loadbalancers",
            json={"loadbalancer": {"name": "traced", "vip_subnet_id": subnet}},
            headers={**api.headers, "traceparent": CALLER},
        ) as response:
            assert response.status == 201, await response.text()
            request_id = response.headers["X-Openstack-Request-Id"]
            lb = (await response.json())["loadbalancer"]
        await api.active(lb["id"])

    def create_trace() -> list[Span]:
        return [s for s in otlp.spans if s.trace_id == CALLER_TRACE]

    wanted = {
        "POST /v2/lbaas/loadbalancers",
        "publish",
        "provision create",
        "render",
        "agent call PUT /haproxy/config",
        "agent PUT /v1/haproxy/config",
        "haproxy reload",
        "activate",
    }
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        names = {s.name for s in create_trace()}
        if wanted <= names and any(n.startswith("consume ") for n in names):
            break
        await asyncio.sleep(0.2)
    spans = create_trace()
    tree = span_tree(spans)
    print(f"the span tree of one LB create ({len(spans)} spans):\n{tree}")
    names = {s.name for s in spans}
    assert wanted <= names, (sorted(wanted - names), tree)
    assert not any(lb["id"] in s.name for s in otlp.spans), "span names carry no ids"
    assert "GET /v2/lbaas/loadbalancers/{loadbalancer_id}" in {s.name for s in otlp.spans}
    reload = next(s for s in spans if s.name == "haproxy reload")
    chain = path_to_root(reload, spans)
    assert chain[0] == "POST /v2/lbaas/loadbalancers", chain  # child of the caller's span
    assert any(n.startswith("consume ") for n in chain), chain
    assert chain.index("provision create") < chain.index("agent call PUT /haproxy/config"), chain
    assert chain[-2:] == ["agent PUT /v1/haproxy/config", "haproxy reload"], chain
    assert {s.service for s in spans} >= {"api", "provisioner", "amphora"}, tree

    # The same create in the JSON logs: the access line carries the request id, the
    # provisioner's lines the LB id and the correlation id.
    api_lines = json_lines(traced_stack, "api")
    access = [line for line in api_lines if line["logger"] == "aiohttp.access"]
    assert any(
        line.get("request_id") == request_id and "POST /v2/lbaas/loadbalancers" in line["message"]
        for line in access
    ), access[-5:]
    provisioner_lines = [
        line for line in json_lines(traced_stack, "provisioner") if line.get("lb_id") == lb["id"]
    ]
    assert provisioner_lines, "no provisioner line names the LB"
    assert all(line.get("correlation_id") for line in provisioner_lines), provisioner_lines
    print("\n".join(json.dumps(line) for line in provisioner_lines[:3]))

    # A child's create: the API's span holds the LB's load, then the append that commits it.
    async with aiohttp.ClientSession() as session:
        api = Client(traced_stack, session)
        body = {"listener": {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}}
        async with session.post(
            f"{api.base}/v2/lbaas/listeners",
            json=body,
            headers={**api.headers, "traceparent": f"00-{CHILD_TRACE}-00f067aa0ba902b7-01"},
        ) as response:
            assert response.status == 201, await response.text()
        await api.active(lb["id"])
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        child = [s for s in otlp.spans if s.trace_id == CHILD_TRACE]
        if {"load", "append"} <= {s.name for s in child}:
            break
        await asyncio.sleep(0.2)
    post = next(s for s in child if s.name == "POST /v2/lbaas/listeners")
    under = sorted((s for s in child if s.parent_id == post.span_id), key=lambda s: s.start)
    # (the relay's publish, whichever service runs it, and the consume are children too)
    api_parts = [s.name for s in under if s.service == "api" and s.name != "publish"]
    assert api_parts == ["load", "append"], span_tree(child)


def json_lines(stack: Stack, service: str) -> list[dict[str, Any]]:
    """The JSON log lines of every replica of ``service`` (other lines skipped)."""
    lines: list[dict[str, Any]] = []
    for path in sorted(stack.state.glob(f"{service}*.log")):
        for text in path.read_text().splitlines():
            if text.startswith("{"):
                lines.append(json.loads(text))
    return lines
