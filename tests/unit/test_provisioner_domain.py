"""The provisioner's pure decisions: the pending step of an LB, the amphorae a create or a
failover builds, the driver reconciliation's verdicts and the amphora records of a teardown
or a given-up build."""

from __future__ import annotations

import asyncpg
import pytest

from libs.common.domain import commands as c
from libs.common.domain.amphora import Amphora, AmphoraStatus, fold_amphora
from libs.common.domain.decide import decide
from libs.common.domain.evolve import fold
from libs.common.domain.model import AmphoraBounds, LoadBalancerState
from libs.common.domain.stored import snapshot
from libs.common.errors import ConcurrencyError, InvalidState, ValidationFailed
from libs.common.events import Envelope, Event, Metadata, new_envelope
from libs.common.events import amphora as amp_ev
from libs.common.events import loadbalancer as lb_ev
from services.provisioner.domain.amphora_records import allocated, booted, given_up, torn_down
from services.provisioner.domain.lifecycle import (
    WorkKind,
    amphora_count,
    amphora_id_for,
    amphorae_to_build,
    may_use_spare,
    pending_work,
    plan_failover,
    plan_scale,
)
from services.provisioner.domain.reconciliation import InventoryRow, judge_driver
from services.provisioner.domain.runtime_changes import needs_reload
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.handlers.compensation import gives_up
from services.provisioner.handlers.lifecycle import LEAVE_NO_WORK
from tests import builders as b

META = Metadata(actor="test")


def stream(*payloads: Event) -> tuple[LoadBalancerState, list[Envelope]]:
    envelopes = [new_envelope("loadbalancer-x", i + 1, p, META) for i, p in enumerate(payloads)]
    return fold(e.payload for e in envelopes), envelopes


def created(topology: str = "SINGLE") -> lb_ev.LoadBalancerCreated:
    return lb_ev.LoadBalancerCreated(
        loadbalancer=snapshot(b.loadbalancer("198.18.0.10", topology=topology))
    )


def test_a_new_lb_is_created_for_its_first_event() -> None:
    state, envelopes = stream(created())
    work = pending_work(state, envelopes)
    assert work.kind == WorkKind.CREATE and work.cause == envelopes[0]


def test_a_settled_lb_has_nothing_pending() -> None:
    state, envelopes = stream(created(), lb_ev.LoadBalancerActivated(amphora_ids=("a",)))
    assert pending_work(state, envelopes).kind == WorkKind.NONE


@pytest.mark.parametrize(
    "settling",
    [
        lb_ev.LoadBalancerActivated(amphora_ids=("a",)),
        lb_ev.ChangesApplied(),
        lb_ev.ProvisioningFailed(reason="test"),
    ],
)
def test_the_events_the_consumer_acks_unhandled_leave_no_work(settling: Event) -> None:
    lb = created()
    pending = (
        lb,
        lb_ev.LoadBalancerActivated(amphora_ids=("a",)),
        lb_ev.ListenerCreated(listener=snapshot(b.listener(b.loadbalancer("198.18.0.10"), 80))),
    )
    assert pending_work(*stream(*pending)).kind == WorkKind.APPLY
    assert settling.event_type in LEAVE_NO_WORK
    assert pending_work(*stream(*pending, settling)).kind == WorkKind.NONE


def test_a_failover_request_since_the_settlement_is_a_failover() -> None:
    request = lb_ev.LoadBalancerFailoverRequested(amphora_id="a", reason="test")
    state, envelopes = stream(created(), lb_ev.LoadBalancerActivated(amphora_ids=("a",)), request)
    work = pending_work(state, envelopes)
    assert work.kind == WorkKind.FAILOVER and work.cause == envelopes[-1]


def test_a_deletion_request_is_a_delete() -> None:
    state, envelopes = stream(
        created(),
        lb_ev.LoadBalancerActivated(amphora_ids=("a",)),
        lb_ev.LoadBalancerDeletionRequested(),
    )
    assert pending_work(state, envelopes).kind == WorkKind.DELETE


def test_a_pair_needs_a_master_and_a_backup_named_by_the_cause() -> None:
    builds = amphorae_to_build("ACTIVE_STANDBY", "cause")
    assert [x.role for x in builds] == ["MASTER", "BACKUP"]
    assert [x.amphora_id for x in builds] == [
        amphora_id_for("cause", "MASTER"),
        amphora_id_for("cause", "BACKUP"),
    ]
    assert amphorae_to_build("ACTIVE_STANDBY", "cause") == builds  # the same event, the same ids
    assert may_use_spare("SINGLE") and not may_use_spare("ACTIVE_STANDBY")


def active_pair() -> LoadBalancerState:
    """An ACTIVE_STANDBY LB served by ``m`` and ``b``."""
    state, _ = stream(
        created("ACTIVE_STANDBY"), lb_ev.LoadBalancerActivated(amphora_ids=("m", "b"))
    )
    return state


def test_a_failover_replaces_the_requested_amphora_in_its_role() -> None:
    state, _ = stream(
        created("ACTIVE_STANDBY"), lb_ev.LoadBalancerActivated(amphora_ids=("m", "b"))
    )
    plan = plan_failover(state, "m", "cause", {"m": "MASTER", "b": "BACKUP"})
    assert plan.failed == ("m",) and plan.kept == ("b",)
    assert [(x.amphora_id, x.role) for x in plan.build] == [
        (amphora_id_for("cause", "MASTER"), "MASTER")
    ]


def test_a_failover_also_replaces_amphorae_that_no_longer_run() -> None:
    state, _ = stream(
        created("ACTIVE_STANDBY"), lb_ev.LoadBalancerActivated(amphora_ids=("m", "b"))
    )
    plan = plan_failover(state, "m", "cause", {"m": "MASTER"})
    assert plan.failed == ("m", "b") and plan.kept == ()
    assert [x.role for x in plan.build] == ["MASTER", "BACKUP"]


def test_a_failover_of_every_amphora_builds_a_full_set() -> None:
    state, _ = stream(created(), lb_ev.LoadBalancerActivated(amphora_ids=("a",)))
    plan = plan_failover(state, None, "cause", {"a": "STANDALONE"})
    assert plan.failed == ("a",) and [x.role for x in plan.build] == ["STANDALONE"]


def test_active_active_builds_amphora_min_and_a_failover_keeps_the_count() -> None:
    bounds = AmphoraBounds(amphora_min=2, amphora_max=4)
    lb = b.loadbalancer("198.18.0.10", topology="ACTIVE_ACTIVE", amphora_bounds=bounds)
    assert amphora_count(lb) == 2 and amphora_count(lb, 3) == 3 and amphora_count(lb, 9) == 4
    builds = amphorae_to_build("ACTIVE_ACTIVE", "cause", count=2)
    assert [x.role for x in builds] == ["STANDALONE", "STANDALONE"]
    assert len({x.amphora_id for x in builds}) == 2
    assert amphorae_to_build("ACTIVE_ACTIVE", "cause", count=2) == builds
    assert may_use_spare("ACTIVE_ACTIVE")
    # A spare claimed for it stands for one of them.
    assert len(amphorae_to_build("ACTIVE_ACTIVE", "cause", ["STANDALONE"], count=2)) == 1
    # An LB scaled to three amphorae gets three back after losing one.
    state, _ = stream(
        lb_ev.LoadBalancerCreated(loadbalancer=snapshot(lb)),
        lb_ev.LoadBalancerActivated(amphora_ids=("a", "b", "c")),
    )
    running = dict.fromkeys("abc", "STANDALONE")
    plan = plan_failover(state, "b", "cause", running)
    assert plan.failed == ("b",) and plan.kept == ("a", "c") and len(plan.build) == 1
    assert state.loadbalancer is not None and state.loadbalancer.amphora_bounds == bounds


def test_scaling_is_an_event_within_the_bounds_and_a_pending_scale_step() -> None:
    bounds = AmphoraBounds(amphora_min=1, amphora_max=3)
    lb = b.loadbalancer("198.18.0.10", topology="ACTIVE_ACTIVE", amphora_bounds=bounds)
    created_aa = lb_ev.LoadBalancerCreated(loadbalancer=snapshot(lb))
    state, _ = stream(created_aa, lb_ev.LoadBalancerActivated(amphora_ids=("a",)))
    (out,) = decide(c.ScaleLoadBalancer(2, {"cpu": 0.9}, "cpu above 0.8"), state)
    assert isinstance(out, lb_ev.LoadBalancerScaledOut)
    assert (out.amphorae_before, out.amphorae, out.measurements) == (1, 2, {"cpu": 0.9})
    assert decide(c.ScaleLoadBalancer(1), state) == []  # already there
    for outside in (0, 4):
        with pytest.raises(ValidationFailed, match="outside the bounds"):
            decide(c.ScaleLoadBalancer(outside), state)
    single, _ = stream(created(), lb_ev.LoadBalancerActivated(amphora_ids=("a",)))
    with pytest.raises(ValidationFailed, match="not ACTIVE_ACTIVE"):
        decide(c.ScaleLoadBalancer(2), single)
    state, envelopes = stream(created_aa, lb_ev.LoadBalancerActivated(amphora_ids=("a",)), out)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status == "PENDING_UPDATE"
    work = pending_work(state, envelopes)
    assert work.kind == WorkKind.SCALE and work.cause is envelopes[-1]
    with pytest.raises(InvalidState):  # one scaling at a time
        decide(c.ScaleLoadBalancer(3), state)
    grow = plan_scale(["a"], 3, "cause")
    assert grow.kept == ("a",) and len(grow.build) == 2 and grow.removed == ()
    assert plan_scale(["a"], 3, "cause") == grow  # the same event, the same amphorae
    shrink = plan_scale(["a", "b", "c"], 1, "cause")
    assert shrink.kept == ("a",) and shrink.build == () and shrink.removed == ("b", "c")


def row(
    amphora_id: str, status: str, lb_id: str | None = None, lb_status: str | None = None
) -> InventoryRow:
    return InventoryRow(amphora_id, status, lb_id, lb_status)


def test_unowned_amphorae_are_reaped_after_the_grace_period_only() -> None:
    inventory = {"gone": row("gone", "DELETED"), "kept": row("kept", "READY")}
    first = judge_driver({"stray", "gone", "kept"}, {"left"}, inventory, {}, 100.0, 5.0)
    assert first.unowned_since == {"stray": 100.0, "gone": 100.0, "left": 100.0}
    assert first.reap == ()
    later = judge_driver({"stray", "kept"}, (), inventory, first.unowned_since, 105.0, 5.0)
    assert later.reap == ("stray",) and later.unowned_since == {"stray": 100.0}


def test_expected_amphorae_that_do_not_run_are_missing() -> None:
    inventory = {
        "lb-amp": row("lb-amp", "ALLOCATED", "lb", "ACTIVE"),
        "busy-lb-amp": row("busy-lb-amp", "ALLOCATED", "lb2", "PENDING_UPDATE"),
        "spare": row("spare", "READY"),
        "running": row("running", "READY"),
    }
    verdicts = judge_driver({"running"}, (), inventory, {}, 0.0, 5.0)
    assert [r.amphora_id for r in verdicts.missing] == ["lb-amp"]
    assert [r.amphora_id for r in verdicts.missing_spares] == ["spare"]


HANDLE = AmphoraHandle("amp", None, "process", "1", "https://127.0.0.1:1", "127.0.0.1")


def test_a_given_up_build_records_its_boot_then_error() -> None:
    events = given_up(Amphora(), "amp", "build given up: x", [booted(HANDLE, "lb")])
    assert [type(e) for e in events] == [amp_ev.AmphoraBooted, amp_ev.AmphoraErrored]
    record = fold_amphora(events)
    assert record.status == AmphoraStatus.ERROR and record.failure_reason == "build given up: x"


def test_a_given_up_spare_keeps_its_allocation_in_error() -> None:
    spare = fold_amphora([booted(HANDLE)])
    events = given_up(spare, "amp", "build given up: x", [allocated("amp", "lb")])
    record = fold_amphora([booted(HANDLE), *events])
    assert record.status == AmphoraStatus.ERROR and record.loadbalancer_id == "lb"


def test_an_amphora_never_recorded_gets_no_record() -> None:
    assert given_up(Amphora(), "amp", "boot failed") == []
    assert torn_down(Amphora(), "amp") == []


def test_a_teardown_records_deleted_once() -> None:
    running = fold_amphora([booted(HANDLE, "lb")])
    assert [type(e) for e in torn_down(running, "amp")] == [amp_ev.AmphoraDeleted]
    deleted = fold_amphora([booted(HANDLE, "lb"), amp_ev.AmphoraDeleted(amphora_id="amp")])
    assert torn_down(deleted, "amp") == []
    assert given_up(deleted, "amp", "teardown failed") == []


def test_only_a_lost_store_connection_is_retried_rather_than_failing_the_lb() -> None:
    assert gives_up(OSError(28, "No space left on device"))
    assert gives_up(RuntimeError("bug"))
    assert gives_up(ConcurrencyError("loadbalancer-x", 3))
    assert not gives_up(asyncpg.PostgresConnectionError("connection lost"))
    assert not gives_up(asyncpg.InterfaceError("connection is closed"))


def test_only_member_adds_removes_and_runtime_updates_may_skip_a_reload() -> None:
    """``needs_reload`` judges the pending events alone (no render): a listener, pool or
    monitor change, a member update of a field the runtime API cannot set, or nothing
    pending needs a reload; member adds, removes and weight/enable updates may not."""
    lb = b.loadbalancer("198.18.0.10")
    pool = b.pool(lb)
    member = b.member(pool, 8080)
    now = member.created_at

    def update(**changes: object) -> lb_ev.MemberUpdated:
        return lb_ev.MemberUpdated(
            member_id=member.id,
            changes=lb_ev.MemberChanges.model_validate(changes),
            updated_at=now,
        )

    added = lb_ev.MemberAdded(member=snapshot(member))
    removed = lb_ev.MemberRemoved(member_id=member.id)
    listener = lb_ev.ListenerCreated(listener=snapshot(b.listener(lb, 80)))
    _, members_only = stream(created(), added, update(weight=3, admin_state_up=False), removed)
    assert not needs_reload(members_only[1:])
    _, with_listener = stream(created(), added, listener)
    assert needs_reload(with_listener[1:])
    _, with_address = stream(created(), added, update(address="198.18.0.20"))
    assert needs_reload(with_address[1:])
    assert needs_reload([])
