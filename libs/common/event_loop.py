"""The event loop each Fulcrum process runs on, chosen here and nowhere else.

Every service's ``__main__``, the amphora agent, the agent host and the zygote's rehearsal run
their main coroutine with ``run(main, service)`` or hand ``new_event_loop(service)`` to
``web.run_app``; tests and one-shot tools keep asyncio's own loop. Each loop made here logs its
class once at DEBUG (``event loop: uvloop.Loop``), which a test reads from started services, so
the choice cannot silently regress.

The services in ``ON_UVLOOP`` run on uvloop (libuv), the others on asyncio's selector loop;
docs/design.md (section 1, event loops) has the A/B figures behind each choice. Health runs on
uvloop: part of its idle work at 1,000 amphorae is the loop's own (the receiver's readiness
callbacks and timers, the writers' wake-ups), and uvloop cut its CPU per heartbeat by about 6%.
The api, housekeeping and the provisioner showed no difference beyond the box's noise, so they
keep asyncio's loop: no second implementation under them for no gain. The provisioner and the
amphora agent must not move without a different way to start subprocesses: uvloop spawns with
``fork``, whose cost grows with the parent's heap (page tables, copy-on-write faults, the child
tearing the copied heap down), where asyncio's subprocesses use ``vfork``; a ``/bin/true`` from
an agent measured 10 ms of the agent's CPU plus 12 ms of the child's under uvloop against 1.5 +
1 ms, and the agents' CPU per step-by-step create rose by about 45%.

Stdlib (and uvloop, imported only where it runs): the amphora agent imports this module too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = ["ON_UVLOOP", "new_event_loop", "run"]

log = logging.getLogger(__name__)

T = TypeVar("T")

ON_UVLOOP: Final = frozenset({"health"})
"""The services that run on uvloop; every other process runs on asyncio's selector loop."""


def new_event_loop(service: str) -> asyncio.AbstractEventLoop:
    """A new (not running, not current) loop of the kind ``service`` runs on; its class is
    logged."""
    if service in ON_UVLOOP:
        import uvloop  # here, not at the top: the agents (and their zygote) never load it

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    log.debug("event loop: %s.%s", type(loop).__module__, type(loop).__qualname__)
    return loop


def run(main: Coroutine[Any, Any, T], service: str) -> T:
    """Run ``main`` to its end on a new loop of ``service``'s kind, as ``asyncio.run`` does
    (remaining tasks cancelled, async generators and the default executor shut down, the loop
    closed), and return its result."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(service)) as runner:
        return runner.run(main)
