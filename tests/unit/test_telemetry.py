"""The tracing setup's choice of exporter (OTEL_TRACES_EXPORTER over the service setting) and
the traceparent helpers."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from libs.common.settings import TelemetrySettings
from libs.common.telemetry import (
    context_from_traceparent,
    current_traceparent,
    inject_traceparent,
    traced_exporter,
)

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_otel_traces_exporter_wins_over_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert traced_exporter("console") == "console"
    assert traced_exporter() == "none"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "OTLP")
    assert traced_exporter("console") == "otlp"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER must be one of none, console, otlp"):
        traced_exporter()


def test_the_setting_accepts_otlp() -> None:
    assert TelemetrySettings(exporter="otlp").exporter == "otlp"


def test_a_span_continues_the_callers_trace_and_passes_it_on() -> None:
    tracer = TracerProvider().get_tracer(__name__)
    headers: dict[str, str] = {}
    inject_traceparent(headers)
    assert headers == {}  # no span, nothing to pass on
    with tracer.start_as_current_span("child", context=context_from_traceparent(CALLER)) as span:
        context = span.get_span_context()
        assert trace.format_trace_id(context.trace_id) == CALLER.split("-")[1]
        inject_traceparent(headers)
        assert headers["traceparent"] == current_traceparent()
        assert headers["traceparent"].split("-")[1:3] == [
            CALLER.split("-")[1],
            trace.format_span_id(context.span_id),
        ]


def test_import_sdk_imports_what_setup_tracing_needs_and_installs_nothing() -> None:
    """In a fresh interpreter, as the zygote calls it before forking agents."""
    import subprocess
    import sys

    check = (
        "import sys\n"
        "from opentelemetry import trace\n"
        "from libs.common.telemetry import import_sdk\n"
        "assert 'opentelemetry.sdk.trace.export' not in sys.modules\n"
        "import_sdk({})\n"
        "assert 'opentelemetry.sdk.trace.export' in sys.modules\n"
        "assert 'opentelemetry.sdk.resources' in sys.modules\n"
        "assert 'requests' not in sys.modules\n"  # no OTLP exporter: not imported
        "import_sdk({'OTEL_TRACES_EXPORTER': 'otlp'})\n"
        "assert 'requests' in sys.modules\n"  # what the exporter imports when built
        "assert type(trace.get_tracer_provider()).__name__ == 'ProxyTracerProvider'\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)


def test_the_resource_import_sdk_built_is_the_provider_s_under_the_same_otel_variables() -> None:
    """In a fresh interpreter, as the zygote does before forking an agent: the resource built
    for the agent's environment is the one its provider gets; none is built for another
    environment's OTEL_* variables, and none is kept when detectors are chosen (they may
    read the process)."""
    import subprocess
    import sys

    check = (
        "import os\n"
        "from opentelemetry import trace\n"
        "from libs.common import telemetry\n"
        "os.environ.pop('OTEL_EXPERIMENTAL_RESOURCE_DETECTORS', None)\n"
        "os.environ['OTEL_SERVICE_NAME'] = 'agent-7'\n"
        "telemetry.import_sdk({**os.environ, 'OTEL_SERVICE_NAME': 'other'}, 'amphora')\n"
        "assert not telemetry._resources\n"
        "telemetry.import_sdk({**os.environ, 'FULCRUM_AMPHORA_LB_ID': 'x'}, 'amphora')\n"
        "[built] = telemetry._resources.values()\n"
        "assert built.attributes['service.name'] == 'agent-7'\n"
        "telemetry.setup_tracing('amphora')\n"
        "assert trace.get_tracer_provider().resource is built\n"
        "os.environ['OTEL_EXPERIMENTAL_RESOURCE_DETECTORS'] = 'otel'\n"
        "assert telemetry._resource('amphora') is not telemetry._resource('amphora')\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)


def test_import_sdk_rehearses_an_otlp_export_on_its_own_receiver() -> None:
    """In a fresh interpreter, as the zygote does: the exporter's first request is made (its
    HTTP client reads netrc then) to a receiver of import_sdk's own, not to the collector the
    environment names, and no thread is left behind in the process that forks."""
    import subprocess
    import sys

    check = (
        "import os, socket, sys, threading\n"
        "collector = socket.socket()\n"
        "collector.bind(('127.0.0.1', 0))\n"
        "collector.listen()\n"
        "collector.setblocking(False)\n"
        "port = collector.getsockname()[1]\n"
        "os.environ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] = f'http://127.0.0.1:{port}/v1/traces'\n"
        "from libs.common.telemetry import import_sdk\n"
        "assert 'netrc' not in sys.modules\n"
        "import_sdk({'OTEL_TRACES_EXPORTER': 'otlp'})\n"
        "assert 'netrc' in sys.modules\n"  # a request was made
        "try:\n"
        "    collector.accept()\n"
        "    raise AssertionError('the collector was called')\n"
        "except BlockingIOError:\n"
        "    pass\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
