"""Property tests of the LoadBalancer aggregate: random command sequences through decide and
evolve keep the tree whole, the PENDING lock holds, and statuses stay coherent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from libs.common.domain import commands as c
from libs.common.domain.decide import decide
from libs.common.domain.evolve import fold
from libs.common.domain.model import (
    PENDING_STATUSES,
    L7Policy,
    L7Rule,
    LoadBalancerState,
    ProvisioningStatus,
)
from libs.common.errors import DomainError, InvalidState, NotFound
from tests import builders

PS = ProvisioningStatus
NOW = datetime(2025, 1, 1, tzinfo=UTC)
CHILD_KINDS = ("listeners", "pools", "members", "healthmonitors", "l7policies", "l7rules")


def _id() -> str:
    return str(uuid.uuid4())


class LoadBalancerMachine(RuleBasedStateMachine):
    """Drives one LB stream with API and provisioner commands in random order."""

    def __init__(self) -> None:
        super().__init__()
        self.state = LoadBalancerState()
        self.lb = builders.loadbalancer("127.77.0.10")

    # -- helpers -------------------------------------------------------------------------------

    def run(self, command: c.Command) -> bool:
        """Apply ``command``; a refusal must leave the state as it was."""
        before = self.state
        was_mutable = (
            before.loadbalancer is not None and before.loadbalancer.provisioning_status == PS.ACTIVE
        )
        child_command = isinstance(
            command, c.CreateChild | c.UpdateChild | c.DeleteChild | c.ReplaceMembers
        )
        try:
            events = decide(command, before)
        except DomainError as exc:
            if child_command and not was_mutable:
                assert isinstance(exc, InvalidState | NotFound), exc
            assert self.state is before
            return False
        assert not (child_command and not was_mutable), "a child changed under a non-ACTIVE LB"
        self.state = fold(events, before)
        assert self.state.version == before.version + len(events)
        return True

    def pick(self, data: st.DataObject, kind: str) -> str:
        """Mostly an existing id of ``kind``; sometimes an unknown one (404 paths)."""
        ids = sorted(getattr(self.state, kind))
        if ids and data.draw(st.integers(0, 9)) > 0:
            return data.draw(st.sampled_from(ids))
        return _id()

    # -- API commands --------------------------------------------------------------------------

    @rule()
    def create_loadbalancer(self) -> None:
        self.run(c.CreateLoadBalancer(loadbalancer=self.lb))

    @rule(port=st.sampled_from([80, 81, 443]), protocol=st.sampled_from(["HTTP", "TCP", "HTTPS"]))
    def create_listener(self, port: int, protocol: str) -> None:
        self.run(c.CreateChild(child=builders.listener(self.lb, port, protocol)))

    @rule(data=st.data(), protocol=st.sampled_from(["HTTP", "TCP"]), with_listener=st.booleans())
    def create_pool(self, data: st.DataObject, protocol: str, with_listener: bool) -> None:
        listener_id = self.pick(data, "listeners") if with_listener else None
        self.run(c.CreateChild(child=builders.pool(self.lb, protocol), listener_id=listener_id))

    @rule(
        data=st.data(),
        address=st.sampled_from(["127.0.0.1", "127.0.0.2"]),
        port=st.sampled_from([80, 81]),
    )
    def create_member(self, data: st.DataObject, address: str, port: int) -> None:
        pool = builders.pool(self.lb).model_copy(update={"id": self.pick(data, "pools")})
        self.run(c.CreateChild(child=builders.member(pool, port, address=address)))

    @rule(data=st.data(), kind=st.sampled_from(["HTTP", "TCP", "UDP-CONNECT"]))
    def create_healthmonitor(self, data: st.DataObject, kind: str) -> None:
        pool = builders.pool(self.lb).model_copy(update={"id": self.pick(data, "pools")})
        self.run(c.CreateChild(child=builders.healthmonitor(pool, kind)))

    @rule(data=st.data(), position=st.integers(1, 5), redirect=st.booleans())
    def create_l7policy(self, data: st.DataObject, position: int, redirect: bool) -> None:
        policy = L7Policy(
            id=_id(),
            project_id=builders.PROJECT,
            created_at=NOW,
            listener_id=self.pick(data, "listeners"),
            action="REDIRECT_TO_POOL" if redirect else "REJECT",
            redirect_pool_id=self.pick(data, "pools") if redirect else None,
            position=position,
        )
        self.run(c.CreateChild(child=policy))

    @rule(data=st.data())
    def create_l7rule(self, data: st.DataObject) -> None:
        rule_ = L7Rule(
            id=_id(),
            project_id=builders.PROJECT,
            created_at=NOW,
            l7policy_id=self.pick(data, "l7policies"),
            type="PATH",
            compare_type="STARTS_WITH",
            value="/x",
        )
        self.run(c.CreateChild(child=rule_))

    @rule(data=st.data(), kind=st.sampled_from(CHILD_KINDS), name=st.text(max_size=5))
    def rename_child(self, data: st.DataObject, kind: str, name: str) -> None:
        self.run(
            c.UpdateChild(
                kind=kind, child_id=self.pick(data, kind), changes={"name": name}, now=NOW
            )
        )  # type: ignore[arg-type]

    @rule(data=st.data(), position=st.integers(1, 5))
    def move_policy(self, data: st.DataObject, position: int) -> None:
        changes: dict[str, Any] = {"position": position}
        self.run(
            c.UpdateChild(
                kind="l7policies", child_id=self.pick(data, "l7policies"), changes=changes, now=NOW
            )
        )

    @rule(data=st.data(), kind=st.sampled_from(CHILD_KINDS))
    def delete_child(self, data: st.DataObject, kind: str) -> None:
        self.run(c.DeleteChild(kind=kind, child_id=self.pick(data, kind)))  # type: ignore[arg-type]

    @rule(
        data=st.data(),
        additive=st.booleans(),
        ports=st.lists(st.sampled_from([80, 81, 82]), max_size=3, unique=True),
    )
    def replace_members(self, data: st.DataObject, additive: bool, ports: list[int]) -> None:
        pool = builders.pool(self.lb).model_copy(update={"id": self.pick(data, "pools")})
        members = tuple(builders.member(pool, p) for p in ports)
        self.run(
            c.ReplaceMembers(pool_id=pool.id, members=members, additive_only=additive, now=NOW)
        )

    @rule(name=st.text(max_size=5))
    def update_loadbalancer(self, name: str) -> None:
        self.run(c.UpdateLoadBalancer(changes={"name": name}, now=NOW))

    @rule(cascade=st.booleans())
    def delete_loadbalancer(self, cascade: bool) -> None:
        self.run(c.DeleteLoadBalancer(cascade=cascade))

    @rule()
    def failover(self) -> None:
        self.run(c.FailoverLoadBalancer())

    # -- provisioner commands --------------------------------------------------------------------

    @rule()
    def activate(self) -> None:
        lb = self.state.loadbalancer
        if lb is not None and lb.provisioning_status == PS.PENDING_CREATE:
            self.run(c.Activate(amphora_ids=("amp",)))

    @rule()
    def apply_changes(self) -> None:
        lb = self.state.loadbalancer
        if lb is not None and lb.provisioning_status == PS.PENDING_UPDATE:
            self.run(c.ApplyChanges())

    @rule()
    def fail(self) -> None:
        lb = self.state.loadbalancer
        if lb is not None and lb.provisioning_status in PENDING_STATUSES:
            self.run(c.FailProvisioning(reason="injected"))

    @rule()
    def complete_deletion(self) -> None:
        lb = self.state.loadbalancer
        if lb is not None and lb.provisioning_status == PS.PENDING_DELETE:
            self.run(c.CompleteDeletion())

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def no_child_without_its_parent(self) -> None:
        s = self.state
        if s.loadbalancer is None or s.loadbalancer.provisioning_status == PS.DELETED:
            assert all(not getattr(s, kind) for kind in CHILD_KINDS)
            return
        lb_id = s.loadbalancer.id
        assert all(x.loadbalancer_id == lb_id for x in s.listeners.values())
        assert all(x.loadbalancer_id == lb_id for x in s.pools.values())
        assert all(x.pool_id in s.pools for x in s.members.values())
        assert all(x.pool_id in s.pools for x in s.healthmonitors.values())
        assert all(x.listener_id in s.listeners for x in s.l7policies.values())
        assert all(x.l7policy_id in s.l7policies for x in s.l7rules.values())
        assert all(x.default_pool_id in (None, *s.pools) for x in s.listeners.values())
        assert all(x.redirect_pool_id in (None, *s.pools) for x in s.l7policies.values())
        assert all(
            len([h for h in s.healthmonitors.values() if h.pool_id == p]) <= 1 for p in s.pools
        )

    @invariant()
    def statuses_are_coherent(self) -> None:
        s = self.state
        lb = s.loadbalancer
        if lb is None:
            return
        children = [child for kind in CHILD_KINDS for child in getattr(s, kind).values()]
        assert all(child.provisioning_status != PS.DELETED for child in children)
        if lb.provisioning_status not in PENDING_STATUSES:
            # Settled: nothing below a settled LB waits for the provisioner.
            assert all(child.provisioning_status in (PS.ACTIVE, PS.ERROR) for child in children)

    @invariant()
    def policy_positions_are_one_to_n(self) -> None:
        for listener_id in self.state.listeners:
            positions = sorted(
                p.position
                for p in self.state.l7policies.values()
                if p.listener_id == listener_id and p.provisioning_status != PS.PENDING_DELETE
            )
            assert positions == list(range(1, len(positions) + 1)), positions


LoadBalancerMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLoadBalancerMachine = LoadBalancerMachine.TestCase
