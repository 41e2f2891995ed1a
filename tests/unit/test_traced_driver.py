"""The traced driver's spans: one ``driver ensure`` span per boot, child of the work's span,
carrying the driver's name and the amphora and LB ids (the only span of a booted amphora)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from services.provisioner.drivers import AmphoraSpec
from services.provisioner.drivers.traced import TracedDriver

finished = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(finished))
trace.set_tracer_provider(provider)

class BootsNothing:
    name = "boots-nothing"
    async def ensure(self, spec):
        return spec.amphora_id

async def boot():
    with trace.get_tracer("test").start_as_current_span("provision create"):
        return await TracedDriver(BootsNothing()).ensure(AmphoraSpec(amphora_id="a1", lb_id="lb1"))

assert asyncio.run(boot()) == "a1"
spans = {s.name: s for s in finished.get_finished_spans()}
assert sorted(spans) == ["driver ensure", "provision create"], sorted(spans)
ensure = spans["driver ensure"]
assert ensure.parent.span_id == spans["provision create"].context.span_id
assert dict(ensure.attributes) == {
    "fulcrum.driver": "boots-nothing", "fulcrum.amphora_id": "a1", "fulcrum.lb_id": "lb1"
}, ensure.attributes
"""


def test_a_boot_is_one_span_under_the_works_span_with_its_ids() -> None:
    """In a fresh interpreter: the global tracer provider can be set once per process."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
