"""OpenTelemetry tracing, set up once per process; ``traceparent`` travels in NATS headers,
in the outbox and in the agent's HTTP requests.

The exporter is chosen by ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console`` or ``none``) when
set, else by the service's telemetry setting (``FULCRUM_<SVC>_TELEMETRY__EXPORTER``). ``otlp``
sends OTLP over HTTP/protobuf; the SDK reads the standard variables itself:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``,
``OTEL_BSP_*`` and ``OTEL_RESOURCE_ATTRIBUTES``. ``OTEL_SERVICE_NAME`` replaces the
service's own name. Spans are recorded (and propagated) whatever the exporter.

The amphora agent uses this module too: opentelemetry only, no control-plane import.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Final

from opentelemetry import context, propagate, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

__all__ = [
    "EXPORTERS",
    "context_from_traceparent",
    "current_traceparent",
    "import_sdk",
    "inject_traceparent",
    "setup_tracing",
    "traced_exporter",
    "tracer",
]

EXPORTERS: Final = ("none", "console", "otlp")

_provider: TracerProvider | None = None
_imported: set[str] = set()  # what import_sdk did already: "sdk", "otlp"
# Resources built for a service name under the OTEL_* variables, which are all the default
# detector reads (beside the installed packages' entry points, the slow part: ~1.6 ms of an
# agent's start). Detectors chosen by this variable may read the process (its pid): not kept.
_DETECTORS_VARIABLE: Final = "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"
_resources: dict[tuple[str, frozenset[tuple[str, str]]], Resource] = {}


def traced_exporter(configured: str = "none") -> str:
    """The exporter in force: ``OTEL_TRACES_EXPORTER`` if set, else ``configured``.
    A ValueError names the accepted values."""
    chosen = (os.environ.get("OTEL_TRACES_EXPORTER") or configured).strip().lower()
    if chosen not in EXPORTERS:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER must be one of {', '.join(EXPORTERS)}, not {chosen!r}"
        )
    return chosen


def setup_tracing(service_name: str, exporter: str = "none") -> None:
    """Install the tracer provider (``exporter``: the service's setting, see the module
    docstring); later calls are no-ops (one provider per process)."""
    global _provider
    if _provider is not None:
        return
    # The SDK is imported here: importing this module (the agent does) stays light, and the
    # SDK's optional imports (psutil) are looked for only where tracing is set up.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    chosen = traced_exporter(exporter)
    provider = TracerProvider(resource=_resource(service_name))
    if chosen == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif chosen == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # the SDK flushes its spans at exit
    _provider = provider


def _otel_variables(environ: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset((k, v) for k, v in environ.items() if k.startswith("OTEL_"))


def _resource(service_name: str) -> Resource:
    """The resource of ``service_name``'s provider in this process (``OTEL_SERVICE_NAME``
    replaces the name), built once per name and OTEL_* variables unless detectors are chosen."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    if os.environ.get(_DETECTORS_VARIABLE):
        return Resource.create({SERVICE_NAME: name})
    key = (service_name, _otel_variables(os.environ))
    if key not in _resources:
        _resources[key] = Resource.create({SERVICE_NAME: name})
    return _resources[key]


def import_sdk(environ: Mapping[str, str] = os.environ, service_name: str | None = None) -> None:
    """Import (and build once) what ``setup_tracing`` uses in a process with ``environ``,
    installing nothing: done in a process that forks agents (the zygote), the work is shared
    instead of done again by each. The OTLP exporter (and ``requests``, which it imports when
    built) only when ``environ`` selects it (``OTEL_TRACES_EXPORTER=otlp``), with one
    throwaway export to a receiver of its own (``_rehearse_export``); the resource of
    ``service_name``'s provider when given and ``environ`` has this process's OTEL_* variables
    (a fork that takes ``environ`` then reuses it). Cheap once done."""
    if "sdk" not in _imported:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: F401

        # Built and dropped: the first build looks up the resource detectors' entry points,
        # the first get_tracer compiles the SDK's warnings filter.
        TracerProvider(resource=Resource.create(), shutdown_on_exit=False).get_tracer(__name__)
        _imported.add("sdk")
    otlp = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "otlp"
    if otlp and "otlp" not in _imported:
        _rehearse_export()
        _imported.add("otlp")
    if service_name is not None and _otel_variables(environ) == _otel_variables(os.environ):
        # A fork that takes ``environ`` has these variables: its ``setup_tracing`` finds it.
        _resource(service_name)


def _rehearse_export() -> None:
    """Export one throwaway span over OTLP/HTTP to a receiver on loopback that lives for this
    call only (the collector sees nothing): a fork then finds the exporter's first request
    (its HTTP client's pools, the code paths it runs once warmed) done; an agent's first
    export cost ~4.5 ms of CPU and ~300 page faults more without it (12.9 -> 7.8 ms)."""
    import http.server
    import threading

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    class Accept(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Accept) as receiver:
        receiver.timeout = 5.0
        answering = threading.Thread(target=receiver.handle_request, name="rehearsal receiver")
        answering.start()
        host, port = receiver.server_address[:2]
        exporter = OTLPSpanExporter(endpoint=f"http://{host!s}:{port}/v1/traces", timeout=5)
        provider = TracerProvider(resource=Resource.create(), shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer(__name__).start_as_current_span("rehearsal"):
            pass
        provider.shutdown()
        answering.join()  # no thread left behind in a process that forks


@functools.cache
def tracer(name: str) -> trace.Tracer:
    """The tracer of ``name``, one per name and process: the SDK's ``get_tracer`` resets the
    warnings filters at every call (a request's span would pay for it). Taken before the
    provider is installed, it is a proxy that follows the provider once it is."""
    return trace.get_tracer(name)


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, if any."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def inject_traceparent(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` to ``headers`` (nothing outside a span)."""
    traceparent = current_traceparent()
    if traceparent:
        headers["traceparent"] = traceparent


def context_from_traceparent(traceparent: str | None) -> context.Context:
    """A context whose parent is ``traceparent`` (or the empty context)."""
    carrier: Mapping[str, str] = {"traceparent": traceparent} if traceparent else {}
    return propagate.extract(carrier)
