"""Operating status roll-up (member -> pool -> listener -> LB), the serving check, and the
stale-scan decisions with the circuit breaker. Pure: states are folded from events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from libs.common.domain.evolve import fold
from libs.common.domain.model import LoadBalancerState
from libs.common.domain.model import OperatingStatus as OS
from libs.common.domain.stored import snapshot
from libs.common.events import loadbalancer as ev
from libs.common.heartbeat_codec import Heartbeat
from services.health.domain.breaker import SilentAmphora, decide_failovers, is_stale
from services.health.domain.rollup import LbView, changes, roll_up, serving
from tests import builders as b

AMP = "amp-1"


@dataclass
class Tree:
    """An ACTIVE LB: listener L (default pool P with members M1, M2) and pool Q (member N,
    no listener)."""

    state: LoadBalancerState
    lb: str
    listener: str
    pool: str
    m1: str
    m2: str
    spare_pool: str
    n: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def view(self) -> LbView:
        view = LbView.of(self.state)
        assert view is not None
        return view


def tree(
    *,
    lb_up: bool = True,
    pool_up: bool = True,
    with_monitor: bool = False,
    activated: bool = True,
    second_listener: bool = False,
) -> Tree:
    lb = b.loadbalancer("127.77.0.10", admin_state_up=lb_up)
    pool = b.pool(lb, admin_state_up=pool_up)
    spare = b.pool(lb)
    listener = b.listener(lb, 80, default_pool_id=pool.id)
    listeners = [listener]
    extra = {}
    if second_listener:
        other = b.listener(lb, 81, default_pool_id=pool.id)
        listeners.append(other)
        extra["listener2"] = other.id
    m1, m2, n = b.member(pool, 8001), b.member(pool, 8002), b.member(spare, 8003)
    monitors = (b.healthmonitor(pool),) if with_monitor else ()
    events: list[Any] = [
        ev.LoadBalancerCreated(
            loadbalancer=snapshot(lb),
            listeners=tuple(snapshot(x) for x in listeners),
            pools=(snapshot(pool), snapshot(spare)),
            members=(snapshot(m1), snapshot(m2), snapshot(n)),
            healthmonitors=tuple(snapshot(x) for x in monitors),
        )
    ]
    if activated:
        events.append(ev.LoadBalancerActivated(amphora_ids=(AMP,)))
    state = fold(events)
    return Tree(state, lb.id, listener.id, pool.id, m1.id, m2.id, spare.id, n.id, extra)


def heartbeat(
    t: Tree,
    *,
    listener: str | None = "OPEN",
    pool: str | None = "UP",
    members: dict[str, str] | None = None,
    extra_pools: dict[str, Any] | None = None,
    extra_listeners: dict[str, str] | None = None,
) -> Heartbeat:
    listeners = {lid: {"status": s} for lid, s in (extra_listeners or {}).items()}
    if listener is not None:
        listeners[t.listener] = {"status": listener, "stats": {}}
    pools: dict[str, Any] = {}
    if pool is not None:
        reported = {t.m1: "UP", t.m2: "UP"} if members is None else members
        pools[f"{t.pool}:{t.listener}"] = {"status": pool, "members": reported}
    pools.update(extra_pools or {})
    return Heartbeat.model_validate(
        {"id": AMP, "seq": 1, "ver": 3, "listeners": listeners, "pools": pools}
    )


# Each case: tree options, heartbeat options, expected statuses by role.
CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, OS | None]]] = [
    (
        "all up",
        {},
        {},
        {
            "lb": OS.ONLINE,
            "listener": OS.ONLINE,
            "pool": OS.ONLINE,
            "m1": OS.ONLINE,
            "m2": OS.ONLINE,
            "spare_pool": OS.OFFLINE,
            "n": None,
        },
    ),
    (
        "one member down degrades pool and lb",
        {},
        {"members": {"m1": "UP", "m2": "DOWN"}},
        {"lb": OS.DEGRADED, "pool": OS.DEGRADED, "m1": OS.ONLINE, "m2": OS.ERROR},
    ),
    (
        "transitional haproxy states count as their first word",
        {},
        {"members": {"m1": "UP 1/3", "m2": "DOWN 2/3"}},
        {"lb": OS.DEGRADED, "pool": OS.DEGRADED, "m1": OS.ONLINE, "m2": OS.ERROR},
    ),
    (
        "backend down is pool error and lb error",
        {},
        {"pool": "DOWN", "members": {"m1": "DOWN", "m2": "DOWN"}},
        {"lb": OS.ERROR, "pool": OS.ERROR, "m1": OS.ERROR, "m2": OS.ERROR},
    ),
    (
        "full listener degrades the lb",
        {},
        {"listener": "FULL"},
        {"lb": OS.DEGRADED, "listener": OS.DEGRADED, "pool": OS.ONLINE},
    ),
    (
        "error outranks degraded",
        {},
        {"listener": "FULL", "pool": "DOWN", "members": {"m1": "DOWN", "m2": "DOWN"}},
        {"lb": OS.ERROR, "listener": OS.DEGRADED, "pool": OS.ERROR},
    ),
    (
        "missing listener of an active lb is error; absent pool offline, members untouched",
        {},
        {"listener": None, "pool": None},
        {"lb": OS.ONLINE, "listener": OS.ERROR, "pool": OS.OFFLINE, "m1": None, "m2": None},
    ),
    (
        "drain, maint, no check",
        {},
        {"members": {"m1": "DRAIN", "m2": "MAINT"}},
        {"lb": OS.ONLINE, "pool": OS.ONLINE, "m1": OS.DRAINING, "m2": OS.OFFLINE},
    ),
    (
        "no check is no monitor",
        {},
        {"members": {"m1": "no check", "m2": "no check"}},
        {"m1": OS.NO_MONITOR, "m2": OS.NO_MONITOR, "pool": OS.ONLINE},
    ),
    (
        "unreported member of a monitored pool goes offline",
        {"with_monitor": True},
        {"members": {"m1": "UP"}},
        {"m1": OS.ONLINE, "m2": OS.OFFLINE, "pool": OS.ONLINE},
    ),
    (
        "unreported member without monitor stays no monitor",
        {},
        {"members": {"m1": "no check"}},
        {"m1": OS.NO_MONITOR, "m2": None},
    ),
    (
        "unknown member state changes nothing",
        {},
        {"members": {"m1": "RESTARTING", "m2": "UP"}},
        {"m1": None, "m2": OS.ONLINE, "pool": OS.ONLINE},
    ),
    (
        "disabled lb stays offline even with its pool down",
        {"lb_up": False},
        {"pool": "DOWN", "members": {"m1": "DOWN", "m2": "DOWN"}},
        {"lb": OS.OFFLINE, "pool": OS.ERROR},
    ),
    (
        "disabled pool is offline whatever haproxy says",
        {"pool_up": False},
        {"pool": "DOWN", "members": {"m1": "MAINT", "m2": "MAINT"}},
        {"lb": OS.ONLINE, "pool": OS.OFFLINE, "m1": None, "m2": None},
    ),
    (
        "missing listener of a pending lb is offline",
        {"activated": False},
        {"listener": None, "pool": None},
        {"listener": OS.OFFLINE, "pool": OS.OFFLINE},
    ),
]


@pytest.mark.parametrize(
    ("tree_options", "beat", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_roll_up(
    tree_options: dict[str, Any], beat: dict[str, Any], expected: dict[str, OS | None]
) -> None:
    t = tree(**tree_options)
    if "members" in beat:
        beat = beat | {"members": {getattr(t, k): v for k, v in beat["members"].items()}}
    statuses = roll_up(t.view, heartbeat(t, **beat))
    for role, wanted in expected.items():
        resource_id = getattr(t, role)
        if wanted is None:
            assert resource_id not in statuses, role
        else:
            assert statuses.get(resource_id) == wanted, role


def test_a_pool_behind_two_listeners_is_up_if_either_backend_is() -> None:
    t = tree(second_listener=True)
    second = t.extra["listener2"]
    beat = heartbeat(
        t,
        pool="DOWN",
        members={t.m1: "DOWN", t.m2: "DOWN"},
        extra_pools={f"{t.pool}:{second}": {"status": "UP", "members": {t.m1: "UP"}}},
        extra_listeners={second: "OPEN"},
    )
    statuses = roll_up(t.view, beat)
    assert statuses[t.pool] == OS.DEGRADED  # UP, with a member reported DOWN first
    assert statuses[t.m1] == OS.ERROR and statuses[t.m2] == OS.ERROR
    assert statuses[second] == OS.ONLINE


def test_changes_are_only_what_differs_from_the_recorded_statuses() -> None:
    t = tree()
    view = t.view
    assert view.current[t.lb] == OS.ONLINE and view.current[t.listener] == OS.ONLINE
    assert view.current[t.pool] == OS.OFFLINE and view.current[t.m1] == OS.NO_MONITOR
    diff = changes(view, roll_up(view, heartbeat(t, members={t.m1: "no check", t.m2: "DOWN"})))
    assert diff == {t.pool: OS.DEGRADED, t.m2: OS.ERROR, t.lb: OS.DEGRADED}
    assert changes(view, {t.lb: OS.ONLINE, "unknown": OS.ERROR}) == {}


def test_view_of_a_deleted_or_unknown_lb_is_none() -> None:
    assert LbView.of(LoadBalancerState()) is None
    t = tree()
    deleted = fold([ev.LoadBalancerDeleted()], t.state)
    assert LbView.of(deleted) is None


def test_only_active_or_error_lbs_are_recorded() -> None:
    assert tree().view.recorded
    assert not tree(activated=False).view.recorded
    failed = fold([ev.ProvisioningFailed(reason="x")], tree().state)
    view = LbView.of(failed)
    assert view is not None and view.recorded


def test_serving_needs_every_enabled_listener_of_an_active_lb() -> None:
    t = tree(second_listener=True)
    both = heartbeat(t, extra_listeners={t.extra["listener2"]: "FULL"})
    assert serving(t.view, AMP, both)
    assert not serving(t.view, AMP, heartbeat(t))  # only one of two listeners
    empty = heartbeat(t, listener=None, pool=None)
    assert not serving(t.view, AMP, empty)  # HAProxy gone
    assert serving(t.view, "another-amphora", empty)  # not one of the LB's amphorae
    assert serving(tree(activated=False).view, AMP, empty)  # pending: config on its way
    assert serving(tree(lb_up=False).view, AMP, empty)  # disabled LB


# -- stale scan decisions --------------------------------------------------------------------


def silent(
    n: int, silent_for: float | None = 5.0, lb_status: str | None = "ACTIVE", **kw: Any
) -> list[SilentAmphora]:
    return [
        SilentAmphora(
            amphora_id=f"a{i}",
            lb_id=kw.get("lb_id", f"lb{i}"),
            silent_for=silent_for,
            age=kw.get("age", 100.0),
            stopped=kw.get("stopped", False),
            lb_status=lb_status,
        )
        for i in range(n)
    ]


def test_stale_rule() -> None:
    [heard] = silent(1, silent_for=3.5)
    [late] = silent(1, silent_for=2.0)
    [never_old] = silent(1, silent_for=None, age=13.5)
    [never_young] = silent(1, silent_for=None, age=12.0)
    assert is_stale(heard, 3.0, 10.0) and is_stale(never_old, 3.0, 10.0)
    assert not is_stale(late, 3.0, 10.0) and not is_stale(never_young, 3.0, 10.0)


def test_stale_amphorae_of_settled_lbs_are_failed() -> None:
    amps = silent(2) + silent(1, silent_for=2.0) + silent(1, lb_status="PENDING_UPDATE")
    decision = decide_failovers(amps, heartbeat_timeout=3.0, stale_grace=10.0, threshold=0)
    assert [a.amphora_id for a in decision.fail] == ["a0", "a1"]
    assert decision.stop == () and not decision.tripped and decision.stale == 3


def test_error_lbs_fail_over_too_but_lbless_amphorae_do_not() -> None:
    amps = silent(1, lb_status="ERROR") + silent(1, lb_id=None, lb_status=None)
    decision = decide_failovers(amps, heartbeat_timeout=3.0, stale_grace=10.0, threshold=0)
    assert len(decision.fail) == 1 and decision.fail[0].lb_status == "ERROR"


def test_breaker_holds_every_stale_amphora_when_too_many_are_silent() -> None:
    decision = decide_failovers(silent(20), heartbeat_timeout=3.0, stale_grace=10.0, threshold=10)
    assert decision.tripped and decision.fail == () and len(decision.stop) == 20


def test_breaker_counts_late_amphorae_so_a_mass_outage_is_not_failed_piecemeal() -> None:
    # Cut off at one instant, 20 amphorae go stale over one heartbeat interval: at the first
    # scan only some are past the timeout, the rest are late.
    amps = silent(6, silent_for=3.2) + silent(14, silent_for=2.4)
    decision = decide_failovers(amps, heartbeat_timeout=3.0, stale_grace=10.0, threshold=10)
    assert decision.tripped and decision.fail == ()
    assert len(decision.stop) == 6  # the late ones are held once they are stale


def test_below_the_threshold_held_amphorae_still_stale_are_failed() -> None:
    decision = decide_failovers(
        silent(3, stopped=True), heartbeat_timeout=3.0, stale_grace=10.0, threshold=10
    )
    assert not decision.tripped and len(decision.fail) == 3


def test_an_lb_without_listeners_is_online_and_served_by_a_beat_without_listeners() -> None:
    """Its amphora runs no HAProxy and beats with no listeners or pools: the LB is ONLINE (as
    Octavia's health manager sets an enabled LB it hears from), its listener-less pool OFFLINE
    (its member untouched), and the amphora counts as serving (no listener is expected)."""
    lb = b.loadbalancer("127.77.0.11")
    pool = b.pool(lb)
    member = b.member(pool, 8001)
    state = fold(
        [
            ev.LoadBalancerCreated(
                loadbalancer=snapshot(lb), pools=(snapshot(pool),), members=(snapshot(member),)
            ),
            ev.LoadBalancerActivated(amphora_ids=(AMP,)),
        ]
    )
    view = LbView.of(state)
    assert view is not None
    beat = Heartbeat.model_validate({"id": AMP, "seq": 1, "ver": 3, "listeners": {}, "pools": {}})
    assert roll_up(view, beat) == {lb.id: OS.ONLINE, pool.id: OS.OFFLINE}
    assert serving(view, AMP, beat)
