"""Readiness checks' outcomes and time bound, with plain coroutines (no I/O involved)."""

from __future__ import annotations

import asyncio
import time

import pytest

from libs.common.readiness import CheckResult, NotReady, Readiness


async def fine() -> str:
    return "all good"


async def refuses() -> str:
    raise NotReady("the dependency is away")


async def breaks() -> str:
    raise ConnectionRefusedError(111, "Connection refused")


async def hangs() -> str:
    await asyncio.Event().wait()
    return "never"


async def test_each_check_reports_its_own_outcome() -> None:
    readiness = Readiness("svc", timeout=0.2)
    for name, check in {"fine": fine, "refuses": refuses, "breaks": breaks}.items():
        readiness.add(name, check)

    assert await readiness.run() == {
        "fine": CheckResult(True, "all good"),
        "refuses": CheckResult(False, "the dependency is away"),
        "breaks": CheckResult(False, "ConnectionRefusedError: [Errno 111] Connection refused"),
    }


async def test_hanging_checks_run_concurrently_and_are_bounded() -> None:
    readiness = Readiness("svc", timeout=0.2)
    for name in ("a", "b", "c"):
        readiness.add(name, hangs)
    readiness.add("fine", fine)

    started = time.monotonic()
    results = await readiness.run()

    assert time.monotonic() - started < 0.4
    assert results["a"] == CheckResult(False, "no answer within 0.2 s")
    assert results["fine"].ok


async def test_a_check_that_ignores_cancellation_does_not_hold_the_answer() -> None:
    finished = asyncio.Event()

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)
            finished.set()
        return "late"

    readiness = Readiness("svc", timeout=0.1)
    readiness.add("stubborn", stubborn)
    started = time.monotonic()

    assert not (await readiness.run())["stubborn"].ok
    assert time.monotonic() - started < 0.3
    await asyncio.wait_for(finished.wait(), 2.0)


async def test_no_checks_is_ready_and_a_name_is_registered_once() -> None:
    readiness = Readiness("svc")
    assert await readiness.run() == {}
    readiness.add("x", fine)
    with pytest.raises(ValueError, match="already registered"):
        readiness.add("x", fine)
