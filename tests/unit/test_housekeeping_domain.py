"""Housekeeping's pure decisions: the spare pool's plan, the verdict on stranded work, and the
re-drive command of the LoadBalancer aggregate (the one a PENDING_* LB accepts)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from libs.common.domain import commands as c
from libs.common.domain.decide import decide
from libs.common.domain.evolve import fold
from libs.common.domain.stored import snapshot
from libs.common.errors import InvalidState
from libs.common.events import Envelope, Event, Metadata
from libs.common.events import housekeeping as hk
from libs.common.events import loadbalancer as ev
from libs.common.events import loadbalancer_status as status_ev
from services.housekeeping.domain.spares import Spare, plan_spares
from services.housekeeping.domain.stranded import PendingPeriod, judge, pending_period
from tests import builders as b

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spare(status: str, age: float = 1.0, silent: float | None = None) -> Spare:
    return Spare(str(uuid.uuid4()), status, age, silent)


def plan(spares: list[Spare], size: int) -> tuple[int, set[str], set[str]]:
    result = plan_spares(spares, size, boot_timeout=60, heartbeat_timeout=10)
    return result.request, {a for a, _ in result.retire}, {a for a, _ in result.fail}


def test_an_empty_pool_asks_for_every_spare() -> None:
    assert plan([], 2) == (2, set(), set())


def test_booting_spares_count_so_nothing_is_asked_twice() -> None:
    assert plan([spare("BOOTING"), spare("READY")], 2) == (0, set(), set())


def test_a_smaller_pool_retires_the_oldest_ready_spares_only() -> None:
    old, new, booting = spare("READY", 50), spare("READY", 5), spare("BOOTING", 1)
    assert plan([old, new, booting], 1) == (0, {old.amphora_id, new.amphora_id}, set())
    assert plan([old, new], 1) == (0, {old.amphora_id}, set())


def test_dead_and_stuck_spares_are_replaced() -> None:
    silent, stuck, fine = spare("READY", silent=30), spare("BOOTING", age=90), spare("READY")
    never_heard = spare("READY", silent=None)  # no health service: not judged by heartbeats
    request, retire, fail = plan([silent, stuck, fine, never_heard], 3)
    assert (request, retire, fail) == (1, {stuck.amphora_id}, {silent.amphora_id})


def test_heartbeat_timeout_zero_judges_no_spare_by_silence() -> None:
    silent = spare("READY", silent=1000)
    result = plan_spares([silent], 1, boot_timeout=60, heartbeat_timeout=0)
    assert (result.request, result.fail) == (0, ())


def envelopes(*timed: tuple[float, Event]) -> list[Envelope]:
    return [
        Envelope(uuid.uuid4(), "loadbalancer-x", i, payload, T0 + timedelta(seconds=at), Metadata())
        for i, (at, payload) in enumerate(timed, start=1)
    ]


def test_the_pending_period_starts_after_the_last_settlement() -> None:
    lb = b.loadbalancer("127.77.0.1")
    member = b.member(b.pool(lb), 80)
    history = envelopes(
        (0, ev.LoadBalancerCreated(loadbalancer=snapshot(lb))),
        (1, ev.LoadBalancerActivated(amphora_ids=("a",))),
        (2, status_ev.OperatingStatusChanged(statuses={})),
        (5, ev.MemberAdded(member=snapshot(member))),
        (9, hk.LoadBalancerRedriveRequested(attempt=1, pending_status="x", pending_seconds=4)),
    )
    state = fold(e.payload for e in history)
    period = pending_period(state, history)
    assert period == PendingPeriod(
        "PENDING_UPDATE", T0 + timedelta(seconds=5), 1, T0 + timedelta(seconds=9)
    )
    assert pending_period(fold(e.payload for e in history[:2]), history[:2]) is None


def test_each_attempt_gets_its_bound_then_the_lb_fails_with_the_reason() -> None:
    fresh = PendingPeriod("PENDING_CREATE", T0, 0, None)
    assert judge(fresh, T0 + timedelta(seconds=5), after=10, redrives=2).action == "wait"
    first = judge(fresh, T0 + timedelta(seconds=11), after=10, redrives=2)
    assert (first.action, first.attempt) == ("redrive", 1)
    once = PendingPeriod("PENDING_CREATE", T0, 1, T0 + timedelta(seconds=11))
    assert judge(once, T0 + timedelta(seconds=15), after=10, redrives=2).action == "wait"
    second = judge(once, T0 + timedelta(seconds=22), after=10, redrives=2)
    assert (second.action, second.attempt) == ("redrive", 2)
    twice = PendingPeriod("PENDING_CREATE", T0, 2, T0 + timedelta(seconds=22))
    verdict = judge(twice, T0 + timedelta(seconds=33), after=10, redrives=2)
    assert verdict.action == "fail"
    assert verdict.reason == "stranded in PENDING_CREATE for 33 s after 2 attempts"


def test_a_redrive_is_accepted_only_while_pending_and_changes_no_status() -> None:
    lb = b.loadbalancer("127.77.0.1")
    pending = fold([ev.LoadBalancerCreated(loadbalancer=snapshot(lb))])
    events = decide(c.RedriveProvisioning(attempt=1, pending_seconds=61.0), pending)
    assert events == [
        hk.LoadBalancerRedriveRequested(
            attempt=1, pending_status="PENDING_CREATE", pending_seconds=61.0
        )
    ]
    after = fold(events, pending)
    assert after.loadbalancer == pending.loadbalancer and after.version == pending.version + 1
    with pytest.raises(InvalidState):  # the rest of the tree stays immutable meanwhile
        decide(c.CreateChild(b.pool(lb)), after)
    active = fold([ev.LoadBalancerActivated(amphora_ids=("a",))], pending)
    assert decide(c.RedriveProvisioning(attempt=1, pending_seconds=1.0), active) == []
