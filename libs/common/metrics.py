"""A process's Prometheus metrics: one ``CollectorRegistry`` per ``Metrics``, rendered by
``prometheus-client`` in the text exposition format (``# HELP`` and ``# TYPE`` on every family).

Every family is named ``<namespace>_<name>`` (``fulcrum_api_...``, ``fulcrum_agent_...``). The
registry holds prometheus-client's process, platform and GC collectors, the counters and
histograms the code declares (``counter``, ``histogram``, ``inc``), callback values read at
scrape time (``gauge``, ``counter_reading``) and families computed by coroutines before each
scrape (``scraped``: the read-model gauges that need SQL). ``/metrics`` is ``respond``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Seconds: from a millisecond answer to a slow provisioning step.
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds an event waits between its append and its consumption.
LAG_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# The text format 0.0.4, which every Prometheus reads.
EXPOSITION_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# A scrape waits at most this long for the ``scraped`` coroutines (then serves without them).
SCRAPE_TIMEOUT: Final = 5.0

Scrape = Callable[[], Awaitable[Iterable[Metric]]]


@dataclass(frozen=True)
class _Reading:
    name: str
    help: str
    kind: str
    read: Callable[[], float]


class _Readings(Collector):
    """Callback values and the families the last scrape computed."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self.readings: dict[str, _Reading] = {}
        self.computed: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        for reading in self.readings.values():
            name = f"{self._namespace}_{reading.name}"
            try:
                value = float(reading.read())
            except Exception:  # a broken reading must not break the scrape
                log.exception("metric %s could not be read", name)
                continue
            if reading.kind == "counter":
                yield CounterMetricFamily(name, reading.help, value=value)
            else:
                yield GaugeMetricFamily(name, reading.help, value=value)
        yield from self.computed


def _help_from(name: str) -> str:
    words = name.removesuffix("_total").replace("_", " ")
    return f"Count of {words}." if name.endswith("_total") else words.capitalize() + "."


class Metrics:
    """The metrics of one process under ``namespace`` (e.g. ``fulcrum_health``)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._readings = _Readings(namespace)
        self.registry.register(self._readings)
        self._scrapes: list[Scrape] = []

    # -- declared families ----------------------------------------------------------------

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        """The counter ``<namespace>_<name>`` (``name`` ends in ``_total``), created once."""
        if name not in self._counters:
            self._counters[name] = Counter(
                f"{self.namespace}_{name}", help, list(labels), registry=self.registry
            )
        return self._counters[name]

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """The histogram ``<namespace>_<name>`` (seconds), created once."""
        if name not in self._histograms:
            self._histograms[name] = Histogram(
                f"{self.namespace}_{name}",
                help,
                list(labels),
                registry=self.registry,
                buckets=list(buckets),
            )
        return self._histograms[name]

    def inc(self, name: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the unlabelled counter ``name`` (created on first use). Called per
        datagram by the health service: an existing counter is found with one lookup."""
        counter = self._counters.get(name)
        if counter is None:
            counter = self.counter(name, _help_from(name))
        counter.inc(amount)

    def gauge(self, name: str, read: Callable[[], float], help: str = "") -> None:
        """A gauge whose value ``read()`` gives at scrape time."""
        self._readings.readings[name] = _Reading(name, help or _help_from(name), "gauge", read)

    def counter_reading(self, name: str, read: Callable[[], float], help: str) -> None:
        """A counter whose value ``read()`` gives at scrape time (a count kept elsewhere)."""
        self._readings.readings[name] = _Reading(name, help, "counter", read)

    def scraped(self, scrape: Scrape) -> None:
        """Compute families with ``scrape()`` before every scrape (e.g. read-model counts)."""
        self._scrapes.append(scrape)

    # -- reading --------------------------------------------------------------------------

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of the sample ``<namespace>_<name>`` (0 when absent)."""
        found = self.registry.get_sample_value(f"{self.namespace}_{name}", labels or {})
        return found if found is not None else 0.0

    def render(self) -> str:
        """The text exposition of everything registered (without running ``scraped``)."""
        return generate_latest(self.registry).decode()

    async def refresh(self) -> None:
        """Run the ``scraped`` coroutines (bounded by SCRAPE_TIMEOUT); a failing one is logged
        and its families left out of this scrape."""
        computed: list[Metric] = []
        for scrape in self._scrapes:
            try:
                computed.extend(await asyncio.wait_for(scrape(), SCRAPE_TIMEOUT))
            except Exception:
                log.exception("metrics scrape %s failed", getattr(scrape, "__name__", scrape))
        self._readings.computed = computed

    async def respond(self, request: web.Request) -> web.Response:
        """``GET /metrics``. The families are collected on the event loop (the readings read
        what the loop's code keeps) and written out as text in a thread: with a family per
        listener and member, 1,000 load balancers are ~20,000 samples and ~0.25 s of
        formatting, which would hold up the loop (health's heartbeats with it)."""
        await self.refresh()
        collected = _Collected(list(self.registry.collect()))
        body = await asyncio.to_thread(generate_latest, collected)
        return web.Response(body=body, headers={"Content-Type": EXPOSITION_TYPE})


@dataclass(frozen=True)
class _Collected:
    """Families collected already, as ``generate_latest`` reads a registry."""

    families: list[Metric]

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


# -- HTTP requests ------------------------------------------------------------------------


def status_class(status: int) -> str:
    """``2xx``...``5xx``; a 501 (the provider cannot do this, Octavia's refusal) is
    ``refused``, not a server error."""
    if status == 501:
        return "refused"
    return f"{status // 100}xx"


def request_middleware(metrics: Metrics) -> Middleware:
    """Time every request into ``http_request_duration_seconds{route, method, status_class}``
    (``route`` is the route template, ``unmatched`` for no route) and count 501 answers in
    ``http_provider_refusals_total{route, method}``."""
    latency = metrics.histogram(
        "http_request_duration_seconds",
        "Seconds to answer an HTTP request, by route template, method and status class "
        "(501 refusals are status_class refused).",
        ["route", "method", "status_class"],
    )
    refusals = metrics.counter(
        "http_provider_refusals_total",
        "Requests refused with 501 because the provider cannot do them.",
        ["route", "method"],
    )

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            latency.labels(route, request.method, status_class(status)).observe(
                time.perf_counter() - started
            )
            if status == 501:
                refusals.labels(route, request.method).inc()

    return middleware
