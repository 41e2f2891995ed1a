"""libs.common.metrics: the exposition (HELP and TYPE on every family, process metrics), the
read-at-scrape values, and the request middleware's labels (route template, method, status
class; a 501 is a refusal, not a 5xx), over a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from libs.common.metrics import Metrics, request_middleware, status_class


def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_every_family_has_help_and_type_and_the_process_metrics_are_there() -> None:
    metrics = Metrics("fulcrum_test")
    metrics.inc("things_done_total", 2)
    metrics.gauge("queue_depth", lambda: 7.0, "Items waiting.")
    metrics.counter_reading("sent_total", lambda: 5.0, "Datagrams sent.")

    text = metrics.render()
    found = families(text)

    assert found["fulcrum_test_things_done"].type == "counter"
    assert found["fulcrum_test_sent"].type == "counter"
    assert found["fulcrum_test_queue_depth"].type == "gauge"
    assert "process_resident_memory_bytes" in text
    assert "python_gc_objects_collected_total" in text
    for family in found.values():
        assert family.documentation, family.name
    assert "fulcrum_test_things_done_total 2.0" in text
    assert metrics.value("things_done_total") == 2.0
    assert metrics.value("never_counted_total") == 0.0


def test_a_reading_that_fails_leaves_the_scrape_whole() -> None:
    metrics = Metrics("fulcrum_test")

    def broken() -> float:
        raise RuntimeError("gone")

    metrics.gauge("broken", broken, "Fails.")
    metrics.gauge("fine", lambda: 1.0, "Works.")

    found = families(metrics.render())
    assert "fulcrum_test_broken" not in found
    assert found["fulcrum_test_fine"].samples[0].value == 1.0


async def test_scraped_families_are_computed_at_each_scrape() -> None:
    metrics = Metrics("fulcrum_test")
    scrapes = 0

    async def count() -> Iterable[Metric]:
        nonlocal scrapes
        scrapes += 1
        family = GaugeMetricFamily("fulcrum_test_rows", "Rows by kind.", labels=["kind"])
        family.add_metric(["a"], float(scrapes))
        return [family]

    async def failing() -> Iterable[Metric]:
        raise RuntimeError("database away")

    metrics.scraped(count)
    metrics.scraped(failing)
    await metrics.refresh()
    await metrics.refresh()

    assert metrics.value("rows", {"kind": "a"}) == 2.0


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 202, 304, 404, 409, 500, 501, 503)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "4xx",
        "5xx",
        "refused",
        "5xx",
    ]


async def test_requests_are_timed_by_route_template_method_and_status_class() -> None:
    metrics = Metrics("fulcrum_test")

    async def show(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"]})

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"faultstring": "not with this provider"}, status=501)

    async def fail(request: web.Request) -> web.Response:
        raise web.HTTPServiceUnavailable()

    app = web.Application(middlewares=[request_middleware(metrics)])
    app.router.add_get("/things/{id}", show)
    app.router.add_post("/things", refuse)
    app.router.add_delete("/things/{id}", fail)
    app.router.add_get("/metrics", metrics.respond)

    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for thing in ("a", "b", "c"):
            assert (await client.get(f"/things/{thing}")).status == 200
        assert (await client.post("/things")).status == 501
        assert (await client.delete("/things/a")).status == 503
        assert (await client.get("/nowhere")).status == 404
        answer = await client.get("/metrics")
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await answer.text()

    def count(route: str, method: str, klass: str) -> float:
        labels = {"route": route, "method": method, "status_class": klass}
        return metrics.value("http_request_duration_seconds_count", labels)

    assert count("/things/{id}", "GET", "2xx") == 3
    assert count("/things", "POST", "refused") == 1
    assert count("/things", "POST", "5xx") == 0
    assert count("/things/{id}", "DELETE", "5xx") == 1
    assert count("unmatched", "GET", "4xx") == 1
    assert metrics.value("http_provider_refusals_total", {"route": "/things", "method": "POST"})
    found = families(text)
    assert found["fulcrum_test_http_request_duration_seconds"].type == "histogram"
    assert found["fulcrum_test_http_provider_refusals"].type == "counter"


async def test_a_scrape_is_written_out_off_the_event_loop() -> None:
    """The exposition is formatted in a thread while the loop goes on: a sample whose value
    can be read only once the loop has run something else is written all the same (formatted
    on the loop, it would wait for it in vain)."""
    loop_ran = threading.Event()

    class ReadOnceTheLoopRan(float):
        def __float__(self) -> float:
            loop_ran.wait(5)
            return 1.0 if loop_ran.is_set() else -1.0

    metrics = Metrics("fulcrum_test")

    async def family() -> Iterable[Metric]:
        gauge = GaugeMetricFamily("fulcrum_test_waiting", "Read late.")
        gauge.add_metric([], ReadOnceTheLoopRan(0.0))
        return [gauge]

    metrics.scraped(family)
    app = web.Application()
    app.router.add_get("/metrics", metrics.respond)
    async with TestClient(TestServer(app)) as client:
        scrape = asyncio.create_task(client.get("/metrics"))
        await asyncio.sleep(0.05)
        loop_ran.set()
        response = await scrape
        text = await response.text()

    assert families(text)["fulcrum_test_waiting"].samples[0].value == 1.0
