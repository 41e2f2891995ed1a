"""A driver wrapper giving each driver call a span (``driver <call>``, with the driver's name
and the amphora id): whichever driver runs, its calls appear in the trace of the work."""

from __future__ import annotations

from collections.abc import Sequence

from libs.common.telemetry import tracer
from services.provisioner.drivers import AmphoraDriver, AmphoraHandle, AmphoraSpec, Leftovers

__all__ = ["TracedDriver"]

_tracer = tracer(__name__)


class TracedDriver:
    """``inner`` with a span around ``ensure``, ``delete``, ``list`` and ``leftovers``."""

    def __init__(self, inner: AmphoraDriver) -> None:
        self.inner = inner
        self.name = inner.name

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def close(self) -> None:
        await self.inner.close()

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        attributes = {
            "fulcrum.driver": self.name,
            "fulcrum.amphora_id": spec.amphora_id,
            "fulcrum.lb_id": spec.lb_id or "",
        }
        with _tracer.start_as_current_span("driver ensure", attributes=attributes):
            return await self.inner.ensure(spec)

    async def delete(self, amphora_id: str) -> None:
        with _tracer.start_as_current_span("driver delete") as span:
            span.set_attribute("fulcrum.driver", self.name)
            span.set_attribute("fulcrum.amphora_id", amphora_id)
            await self.inner.delete(amphora_id)

    async def list(self) -> list[AmphoraHandle]:
        with _tracer.start_as_current_span("driver list") as span:
            span.set_attribute("fulcrum.driver", self.name)
            return await self.inner.list()

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        with _tracer.start_as_current_span("driver get") as span:
            span.set_attribute("fulcrum.driver", self.name)
            span.set_attribute("fulcrum.amphora_id", amphora_id)
            return await self.inner.get(amphora_id)

    async def leftovers(self) -> Sequence[str]:
        with _tracer.start_as_current_span("driver leftovers") as span:
            span.set_attribute("fulcrum.driver", self.name)
            return await self.inner.leftovers()

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        with _tracer.start_as_current_span("driver list with leftovers") as span:
            span.set_attribute("fulcrum.driver", self.name)
            return await self.inner.list_with_leftovers()

    async def reachable_hosts(self) -> set[str] | None:
        return await self.inner.reachable_hosts()
