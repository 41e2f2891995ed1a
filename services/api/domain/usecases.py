"""The write use cases: policy, quota and VIP decisions, then one command on the LB's stream.

Each method locates the target through the read model (for its LB stream and project),
enforces RBAC, builds the command (a factory when it depends on the LB's current state) and
runs it through ``LoadBalancerRepository.execute``. The Outcome's state renders the answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from libs.common.domain import commands as c
from libs.common.domain import kinds as child_kinds
from libs.common.domain.decide import decide
from libs.common.domain.kinds import ChildKind
from libs.common.domain.model import (
    AdditionalVip,
    AmphoraBounds,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancerState,
    Member,
    Pool,
    ProvisioningStatus,
    Topology,
)
from libs.common.errors import (
    Conflict,
    InvalidState,
    NotFound,
    NotImplementedByProvider,
    ValidationFailed,
)
from libs.common.events import Metadata
from libs.common.readmodel import ViewLocation, located
from libs.common.repository import CommandFactory, LoadBalancerRepository, Loaded, Outcome
from libs.common.settings import NetworkSettings, SubnetConfig
from libs.common.telemetry import tracer
from services.api.domain import builders, providers, rules
from services.api.domain.graph import build_graph
from services.api.domain.kinds import LISTENER, LOADBALANCER, POOL, Kind
from services.api.domain.policy import Action, RequestContext, enforce
from services.api.domain.ports import Located, Views
from services.api.domain.quotas import QuotaGuard
from services.api.domain.secrets import TlsReferences
from services.api.domain.vip import (
    AdditionalVipRequest,
    VipAllocator,
    VipRequest,
    pool_size,
    resolve_additional_subnets,
    resolve_subnet,
    vip_port_id,
)

PROVIDER_ALIASES: Final = frozenset({"amphora", "octavia"})

_tracer = tracer(__name__)


@dataclass(frozen=True)
class Config:
    """The settings the use cases depend on."""

    network: NetworkSettings
    reserved_ips: frozenset[str]
    provider: str
    topology: Topology
    # What the deployment's amphora driver can honour (refused here otherwise).
    abilities: providers.DriverAbilities = providers.ALL_ABILITIES
    # Whether the amphora driver serves UDP (nftables in the amphora's network namespace).
    udp_dataplane: bool = False

    @property
    def subnet_ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.network.subnets)


class SecurityGroupLookup(Protocol):
    async def existing(self, group_ids: Collection[str], project_id: str | None) -> set[str]:
        """Those of ``group_ids`` that exist (in ``project_id`` when given)."""
        ...


@dataclass(frozen=True)
class Placement:
    """What a create's flavor and availability zone decide: the topology, and the networks a
    VIP may use (None: every configured one)."""

    topology: Topology
    vip_networks: frozenset[str] | None = None
    amphora_bounds: AmphoraBounds | None = None
    autoscale: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Found(ViewLocation):
    """A resource located on a fresh load of its LB (``LoadBalancing.find``), placed as its
    view row would place it, with that load and its project's quota limits, read beside it."""

    loaded: Loaded
    limits: dict[str, int]

    @classmethod
    def on(
        cls, loaded: Loaded, limits: dict[str, int], kind: Kind, resource_id: str
    ) -> Found | None:
        """``resource_id`` on ``loaded``, or None where the load does not place it."""
        row = located(loaded.state, kind.key, resource_id)
        if row is None:
            return None
        return cls(row.id, row.lb_id, row.parent_id, row.project_id, loaded, limits)

    def beside(self, kind: Kind, resource_id: str) -> Found | None:
        """Another resource of the same load, or None where the load does not place it."""
        return Found.on(self.loaded, self.limits, kind, resource_id)


@dataclass(frozen=True)
class Created:
    outcome: Outcome
    resource_id: str


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


def _may_write(ctx: RequestContext, kind: Kind, row: Located) -> Located:
    """``row``, if ``ctx`` may write it (else Forbidden, or NotFound where it is hidden)."""
    enforce(ctx, Action.WRITE, row.project_id, hidden=NotFound.resource(kind.label, row.id))
    return row


class LoadBalancing:
    """Every state-changing API operation on load balancers and their children."""

    def __init__(
        self,
        repo: LoadBalancerRepository,
        views: Views,
        quotas: QuotaGuard,
        config: Config,
        tls: TlsReferences | None = None,
        security_groups: SecurityGroupLookup | None = None,
    ) -> None:
        self._repo = repo
        self._security_groups = security_groups
        self._views = views
        self._quotas = quotas
        self._vips = VipAllocator(views)
        self._config = config
        # Key manager references and cipher strings, checked before anything is written.
        self._tls = tls or TlsReferences(None)

    # -- lookups -------------------------------------------------------------------------------

    async def locate(self, kind: Kind, resource_id: str) -> Located:
        """The live resource or NotFound (404) in Octavia's words."""
        row = await self._views.get(kind, resource_id)
        if row is None:
            raise NotFound.resource(kind.label, resource_id)
        return row

    async def find(self, kind: Kind, resource_id: str) -> Located:
        """``locate`` for a create under the resource: when the repository knows its LB, the
        LB is loaded instead of the view read, beside the quota limits of its project (known
        from that state: a project never changes), and the answer (a ``Found``) carries the
        load for the create to decide on. The view decides whenever the load does not place
        the resource, so the answers are ``locate``'s."""
        lb_id = resource_id if kind is LOADBALANCER else self._repo.holder(resource_id)
        known = self._repo.known(lb_id) if lb_id is not None else None
        if lb_id is None or known is None or known.loadbalancer is None:
            return await self.locate(kind, resource_id)
        with _tracer.start_as_current_span("load"):
            loaded, limits = await asyncio.gather(
                self._repo.read(lb_id), self._quotas.limits(known.loadbalancer.project_id)
            )
        found = Found.on(loaded, limits, kind, resource_id)
        return found if found is not None else await self.locate(kind, resource_id)

    async def _writable(self, ctx: RequestContext, kind: Kind, resource_id: str) -> Located:
        return _may_write(ctx, kind, await self.locate(kind, resource_id))

    # -- load balancers ------------------------------------------------------------------------

    async def create_loadbalancer(
        self, ctx: RequestContext, fields: dict[str, Any], meta: Metadata
    ) -> Created:
        """Create an LB (with its tree for a single-call create); VIP from its subnet."""
        project_id = fields.get("project_id") or ctx.project_id
        if project_id is None:
            raise ValidationFailed(
                "Missing project ID in request where one is required. An administrator "
                "should check the keystone settings in the Octavia configuration."
            )
        enforce(ctx, Action.WRITE, project_id)
        self._check_provider_options(fields)
        await self._check_vip_options(ctx, fields, project_id)
        await self._tls.check(fields, project_id)
        placement = await self._placement(fields)
        refusal = self._config.abilities.refuse_topology(placement.topology)
        if refusal is not None:
            raise ValidationFailed(f"Validation failure: {refusal}")
        request = VipRequest(
            subnet_id=fields.get("vip_subnet_id"),
            network_id=fields.get("vip_network_id"),
            port_id=fields.get("vip_port_id"),
            address=fields.get("vip_address"),
        )
        subnet = resolve_subnet(self._config.network, request)
        if placement.vip_networks is not None and subnet.network_id not in placement.vip_networks:
            raise ValidationFailed(
                "Validation failure: Supplied VIP network_id is not allowed by the configuration "
                "of this deployment."
            )
        extra = [
            AdditionalVipRequest(
                subnet_id=item["subnet_id"],
                address=item.get("ip_address"),
                port_id=item.get("port_id"),
            )
            for item in fields.get("additional_vips") or ()
        ]
        extra_subnets = resolve_additional_subnets(self._config.network, subnet, extra)
        # Every VIP to allocate, the primary first: (subnet, the address asked for or None).
        wanted = [(subnet, request.address)]
        wanted += [(s, e.address) for s, e in zip(extra_subnets, extra, strict=True)]
        lb_id = _new_id()
        now = _now()
        for vip_subnet, explicit in wanted:
            if explicit is not None:
                await self._vips.check_requested(vip_subnet, explicit)
        offered, limits = await asyncio.gather(
            asyncio.gather(*(self._vips.offer(s) for s, explicit in wanted if explicit is None)),
            self._quotas.limits(project_id),
        )
        each_offer = iter(offered)
        picks = [explicit or next(each_offer) for _, explicit in wanted]
        # Each lost race is a pool address taken by another create: the loop ends.
        losses_left = sum(pool_size(s) for s, explicit in wanted if explicit is None)
        while True:
            vip = {
                "vip_address": picks[0],
                "vip_subnet_id": subnet.id,
                "vip_network_id": subnet.network_id,
                "vip_port_id": vip_port_id(lb_id),
                "additional_vips": tuple(
                    AdditionalVip(subnet_id=s.id, ip_address=a)
                    for (s, _), a in zip(wanted[1:], picks[1:], strict=True)
                ),
            }
            lb = builders.new_loadbalancer(
                fields,
                lb_id=lb_id,
                project_id=project_id,
                vip=vip,
                provider=self._config.provider,
                topology=placement.topology.value,
                amphora_bounds=placement.amphora_bounds,
                autoscale=placement.autoscale,
                now=now,
            )
            graph = build_graph(
                lb,
                fields,
                reserved_ips=self._config.reserved_ips,
                subnet_ids=self._config.subnet_ids,
                now=now,
            )
            command = graph.command(lb)
            _check_fields_first(command, LoadBalancerState())
            want = {"loadbalancer": 1, **graph.quota_counts()}
            try:
                async with self._quotas.admit(project_id, want, limits) as conn:
                    self._check_driver_options(fields)
                    self._check_vip_families([s for s, _ in wanted])
                    self._check_active_active(placement.topology, [s for s, _ in wanted])
                    self._check_servable(command, LoadBalancerState())
                    outcome = await self._repo.execute(lb_id, command, meta, conn=conn, fresh=True)
            except Conflict as lost_race:
                # Another create took an address between our read and our append: draw again
                # for each address lost that way (an address asked for is not retried).
                lost = [
                    index
                    for index, ((s, explicit), a) in enumerate(zip(wanted, picks, strict=True))
                    if await self._vips.is_taken(s, a)
                ]
                if not lost or any(wanted[i][1] is not None for i in lost):
                    raise
                if losses_left <= 0:
                    exhausted = wanted[lost[0]][0].id
                    raise Conflict(
                        f"No more IP addresses available on subnet {exhausted}."
                    ) from lost_race
                losses_left -= len(lost)
                for index in lost:
                    picks[index] = await self._vips.offer(wanted[index][0], contended=True)
                continue
            return Created(outcome, lb_id)

    def _check_provider_options(self, fields: dict[str, Any]) -> None:
        provider = fields.get("provider")
        if provider is not None and provider not in PROVIDER_ALIASES | {self._config.provider}:
            raise ValidationFailed(f"Provider '{provider}' is not enabled.")

    async def _check_vip_options(
        self,
        ctx: RequestContext,
        fields: dict[str, Any],
        project_id: str,
    ) -> None:
        """Octavia's VIP checks: a QoS policy must exist (there is no QoS API here, so none
        does), and so must every security group, in the caller's view (400)."""
        qos = fields.get("vip_qos_policy_id")
        if qos is not None:
            raise ValidationFailed(f"qos_policy {qos} not found.")
        wanted = fields.get("vip_sg_ids") or []
        if not wanted:
            return
        scope = None if ctx.admin else project_id
        found = (
            await self._security_groups.existing(wanted, scope)
            if self._security_groups is not None
            else set()
        )
        for group_id in wanted:
            if group_id not in found:
                raise ValidationFailed(f"Security Group {group_id} not found.")

    def _check_driver_options(self, fields: dict[str, Any]) -> None:
        """The provider's refusals (501, after every 400): security groups on a driver whose
        amphorae cannot filter their VIPs."""
        abilities = self._config.abilities
        if fields.get("vip_sg_ids") and not abilities.vip_security_groups:
            raise rules.unsupported(
                f"VIP security groups cannot be enforced by the {abilities.driver} amphora "
                "driver of this deployment (its amphorae share the host's network namespace)."
            )

    @staticmethod
    def _check_active_active(topology: Topology, subnets: list[SubnetConfig]) -> None:
        """The provider's refusal (501, last) of what the ACTIVE_ACTIVE distributor cannot
        spread: an IPv6 VIP, or more than one VIP."""
        if topology != Topology.ACTIVE_ACTIVE:
            return
        if len(subnets) > 1 or subnets[0].ip_version == 6:
            raise rules.unsupported(
                "the ACTIVE_ACTIVE topology spreads one IPv4 VIP (no IPv6 VIP, no additional_vips)."
            )

    def _check_vip_families(self, subnets: list[SubnetConfig]) -> None:
        """The provider's refusal (501, last) of an IPv6 VIP on a driver whose amphorae hold
        IPv4 VIPs only."""
        abilities = self._config.abilities
        if not abilities.ipv6_vips and any(s.ip_version == 6 for s in subnets):
            raise rules.unsupported(
                f"IPv6 VIPs cannot be served by the {abilities.driver} amphora driver of this "
                "deployment (its amphorae hold loopback VIPs, which are IPv4)."
            )

    async def _placement(self, fields: dict[str, Any]) -> Placement:
        """The flavor (must exist and be enabled) sets the topology; the availability zone
        (likewise) may narrow the VIP networks. 400 in Octavia's words otherwise."""
        topology = self._config.topology
        flavor_data = None
        flavor_id = fields.get("flavor_id")
        if flavor_id is not None:
            flavor = await self._views.flavor_offering(flavor_id)
            if flavor is None:
                raise ValidationFailed("Validation failure: Invalid flavor_id.")
            if not flavor.enabled:
                raise ValidationFailed(
                    f"The selected flavor is not allowed in this deployment: {flavor_id}"
                )
            topology = providers.topology_of(flavor.data, topology)
            flavor_data = flavor.data
        vip_networks = None
        zone_name = fields.get("availability_zone")
        if zone_name is not None:
            zone = await self._views.availability_zone_offering(zone_name)
            if zone is None:
                raise ValidationFailed("Validation failure: Invalid availability zone.")
            if not zone.enabled:
                raise ValidationFailed(
                    f"The selected availability_zone is not allowed in this deployment: {zone_name}"
                )
            vip_networks = providers.valid_vip_networks(zone.data)
        ceiling = self._config.abilities.amphora_ceiling
        bounds = providers.amphora_bounds(flavor_data, topology, ceiling)
        autoscale = providers.autoscale_overrides(flavor_data, topology)
        return Placement(topology, vip_networks, bounds, autoscale)

    async def update_loadbalancer(
        self, ctx: RequestContext, lb_id: str, given: dict[str, Any], meta: Metadata
    ) -> Outcome:
        row = await self._writable(ctx, LOADBALANCER, lb_id)
        await self._check_vip_options(ctx, given, row.project_id)
        self._check_driver_options(given)
        changes = builders.update_changes(given)
        if "vip_sg_ids" in given and given["vip_sg_ids"] is None:
            changes["vip_sg_ids"] = []
        command = c.UpdateLoadBalancer(changes=changes, now=_now())
        return await self._repo.execute(lb_id, command, meta)

    async def delete_loadbalancer(
        self, ctx: RequestContext, lb_id: str, cascade: bool, meta: Metadata
    ) -> Outcome:
        await self._writable(ctx, LOADBALANCER, lb_id)
        return await self._repo.execute(lb_id, c.DeleteLoadBalancer(cascade=cascade), meta)

    async def failover_loadbalancer(
        self, ctx: RequestContext, lb_id: str, meta: Metadata
    ) -> Outcome:
        row = await self.locate(LOADBALANCER, lb_id)
        enforce(ctx, Action.ADMIN, row.project_id)
        return await self._repo.execute(lb_id, c.FailoverLoadBalancer(), meta)

    # -- children ------------------------------------------------------------------------------

    async def _create_child(
        self,
        ctx: RequestContext,
        lb_id: str,
        project_id: str,
        kind: ChildKind,
        build: Any,
        meta: Metadata,
        listener_id: str | None = None,
        found: Located | None = None,
    ) -> Created:
        """Run ``CreateChild(build(state))`` under the quota of ``kind``; on the load ``found``
        carries when it is a ``Found`` (of a resource of this LB), else on a load of its own."""
        enforce(ctx, Action.WRITE, project_id, hidden=NotFound.resource("Load Balancer", lb_id))
        child_id = _new_id()

        def command(state: LoadBalancerState) -> c.Command:
            lb = state.loadbalancer
            if lb is None or lb.provisioning_status == ProvisioningStatus.DELETED:
                raise NotFound.resource("Load Balancer", lb_id)
            created = c.CreateChild(child=build(state, child_id), listener_id=listener_id)
            self._check_servable(created, state)
            return created

        # The quota's limits are read beside the load (one round trip's wait, not two); they
        # are judged only after the command's own checks, as Octavia orders its answers.
        if isinstance(found, Found) and found.lb_id == lb_id:
            loaded, limits = found.loaded, found.limits
        else:
            with _tracer.start_as_current_span("load"):
                loaded, limits = await asyncio.gather(
                    self._repo.read(lb_id), self._quotas.limits(project_id)
                )
        _check_fields_first(command, loaded.state)
        with _tracer.start_as_current_span("append"):
            async with self._quotas.admit(project_id, {kind.quota: 1}, limits) as conn:
                outcome = await self._repo.execute(lb_id, command, meta, conn=conn, loaded=loaded)
        return Created(outcome, child_id)

    def _check_servable(self, command: c.Command, state: LoadBalancerState) -> None:
        """The provider's 501s (a protocol it cannot serve; UDP members of another IP family
        than the VIP) after every other check: the aggregate's rules run first, as Octavia
        calls its provider last."""
        children: list[Any]
        match command:
            case c.CreateLoadBalancer():
                children = [*command.listeners, *command.pools, *command.healthmonitors]
            case c.CreateChild():
                children = [command.child]
            case c.ReplaceMembers():
                children = list(command.members)
            case _:
                return
        refusals: list[NotImplementedByProvider] = []
        for child in children:
            try:
                self._servable(child, state)
            except NotImplementedByProvider as refusal:
                refusals.append(refusal)
        if refusals:
            decide(command, state)
            raise refusals[0]

    def _servable(self, child: Any, state: LoadBalancerState) -> None:
        if isinstance(child, Member):
            pool, lb = state.pools.get(child.pool_id), state.loadbalancer
            if pool is not None and lb is not None:
                rules.check_member_family(child, pool, lb, bool(state.pool_listeners(pool.id)))
            return
        if isinstance(child, HealthMonitor):
            rules.check_monitor_servable(child.type.value)
            return
        kind = getattr(child, "protocol", None)
        if kind is not None and kind.value in rules.KERNEL_PROTOCOLS:
            rules.check_servable(kind.value, self._config.udp_dataplane)

    async def create_listener(
        self, ctx: RequestContext, fields: dict[str, Any], meta: Metadata
    ) -> Created:
        lb = await self.find(LOADBALANCER, fields["loadbalancer_id"])
        enforce(ctx, Action.WRITE, lb.project_id, hidden=NotFound.resource("Load Balancer", lb.id))
        rules.check_certificate_refs(fields["protocol"], fields)
        await self._tls.check(fields, lb.project_id)

        def build(state: LoadBalancerState, child_id: str) -> Listener:
            listener = builders.new_listener(
                fields, listener_id=child_id, lb_id=lb.id, project_id=lb.project_id, now=_now()
            )
            assert state.loadbalancer is not None
            rules.check_listener(listener, state.loadbalancer)
            return listener

        return await self._create_child(
            ctx, lb.id, lb.project_id, child_kinds.LISTENER, build, meta, found=lb
        )

    async def create_pool(
        self, ctx: RequestContext, fields: dict[str, Any], meta: Metadata
    ) -> Created:
        listener_id = fields.get("listener_id")
        lb_id = fields.get("loadbalancer_id")
        if listener_id is None and lb_id is None:
            raise ValidationFailed(
                "Validation failure: Must provide at least one of: loadbalancer_id, listener_id"
            )
        listener: Located | None = None
        if listener_id is not None:
            listener = await self.find(LISTENER, listener_id)
            if lb_id is not None and lb_id != listener.lb_id:
                raise ValidationFailed(
                    f"Validation failure: Listener {listener_id} does not belong to load "
                    f"balancer {lb_id}."
                )
            lb_id = listener.lb_id
        assert lb_id is not None
        # The listener's LB, placed by the same load when the listener was found on one.
        in_load = listener.beside(LOADBALANCER, lb_id) if isinstance(listener, Found) else None
        lb = in_load or await self.find(LOADBALANCER, lb_id)
        enforce(ctx, Action.WRITE, lb.project_id, hidden=NotFound.resource("Load Balancer", lb.id))
        await self._tls.check(fields, lb.project_id)

        def build(state: LoadBalancerState, child_id: str) -> Pool:
            pool = builders.new_pool(
                fields, pool_id=child_id, lb_id=lb.id, project_id=lb.project_id, now=_now()
            )
            rules.check_pool(pool)
            return pool

        return await self._create_child(
            ctx,
            lb.id,
            lb.project_id,
            child_kinds.POOL,
            build,
            meta,
            listener_id=listener_id,
            found=lb,
        )

    async def create_member(
        self, ctx: RequestContext, pool: Located, fields: dict[str, Any], meta: Metadata
    ) -> Created:
        """A member of ``pool`` (located by the caller, with ``find`` to save a load: the
        LB's load decides whether it is still there)."""
        if fields.get("request_sriov"):
            raise ValidationFailed("Validation failure: SR-IOV member ports are not available.")

        def build(state: LoadBalancerState, child_id: str) -> Member:
            return self._member(state, pool, fields, child_id, _now())

        return await self._create_child(
            ctx, pool.lb_id, pool.project_id, child_kinds.MEMBER, build, meta, found=pool
        )

    async def replace_members(
        self,
        ctx: RequestContext,
        pool: Located,
        members: list[dict[str, Any]],
        additive_only: bool,
        meta: Metadata,
    ) -> Outcome:
        """Octavia's batch update: create, update and (unless additive) remove members of
        ``pool`` (located by the caller)."""
        pool_id = _may_write(ctx, POOL, pool).id
        if any(m.get("request_sriov") for m in members):
            raise ValidationFailed("Validation failure: SR-IOV member ports are not available.")
        now = _now()

        def command(state: LoadBalancerState) -> c.Command:
            built = [self._member(state, pool, fields, _new_id(), now) for fields in members]
            replace = c.ReplaceMembers(
                pool_id=pool_id, members=tuple(built), additive_only=additive_only, now=now
            )
            self._check_servable(replace, state)
            return replace

        existing = await self._views.count_pool_members(pool_id)
        growth = len(members) - (0 if additive_only else existing)
        loaded = await self._repo.read(pool.lb_id)
        _check_fields_first(command, loaded.state)
        async with self._quotas.admit(pool.project_id, {child_kinds.MEMBER.quota: growth}) as conn:
            return await self._repo.execute(pool.lb_id, command, meta, conn=conn, loaded=loaded)

    def _member(
        self,
        state: LoadBalancerState,
        pool: Located,
        fields: dict[str, Any],
        member_id: str,
        now: datetime,
    ) -> Member:
        """A new member of ``pool`` from the request's fields, checked against the rules."""
        member = builders.new_member(
            fields,
            member_id=member_id,
            pool_id=pool.id,
            project_id=pool.project_id,
            monitored=state.pool_healthmonitor(pool.id) is not None,
            now=now,
        )
        rules.check_member(member, self._config.reserved_ips, self._config.subnet_ids)
        return member

    async def create_healthmonitor(
        self, ctx: RequestContext, fields: dict[str, Any], meta: Metadata
    ) -> Created:
        pool = await self.find(POOL, fields["pool_id"])

        def build(state: LoadBalancerState, child_id: str) -> HealthMonitor:
            hm = builders.new_healthmonitor(
                fields, hm_id=child_id, pool_id=pool.id, project_id=pool.project_id, now=_now()
            )
            parent = state.pools.get(pool.id)
            if parent is not None:
                rules.check_healthmonitor_type(hm, parent)
            rules.check_healthmonitor(hm)
            return hm

        return await self._create_child(
            ctx, pool.lb_id, pool.project_id, child_kinds.HEALTHMONITOR, build, meta, found=pool
        )

    async def create_l7policy(
        self, ctx: RequestContext, fields: dict[str, Any], meta: Metadata
    ) -> Created:
        listener = await self.find(LISTENER, fields["listener_id"])

        def build(state: LoadBalancerState, child_id: str) -> L7Policy:
            live = [
                p
                for p in state.listener_policies(listener.id)
                if p.provisioning_status != "PENDING_DELETE"
            ]
            return builders.new_l7policy(
                fields,
                policy_id=child_id,
                listener_id=listener.id,
                project_id=listener.project_id,
                position=fields.get("position") or len(live) + 1,
                now=_now(),
            )

        return await self._create_child(
            ctx,
            listener.lb_id,
            listener.project_id,
            child_kinds.L7POLICY,
            build,
            meta,
            found=listener,
        )

    async def create_l7rule(
        self, ctx: RequestContext, policy: Located, fields: dict[str, Any], meta: Metadata
    ) -> Created:
        """A rule of ``policy`` (located by the caller: the LB's load decides whether it is
        still there)."""
        policy_id = policy.id

        def build(state: LoadBalancerState, child_id: str) -> L7Rule:
            rule = builders.new_l7rule(
                fields,
                rule_id=child_id,
                policy_id=policy_id,
                project_id=policy.project_id,
                now=_now(),
            )
            rules.check_l7rule(rule)
            return rule

        return await self._create_child(
            ctx, policy.lb_id, policy.project_id, child_kinds.L7RULE, build, meta, found=policy
        )

    async def update_child(
        self,
        ctx: RequestContext,
        kind: Kind,
        resource_id: str,
        given: dict[str, Any],
        meta: Metadata,
        parent_id: str | None = None,
    ) -> Outcome:
        """PUT on a child: the merged result must pass the kind's rules."""
        row = await self._writable(ctx, kind, resource_id)
        if parent_id is not None and row.parent_id != parent_id:
            raise NotFound.resource(kind.label, resource_id)
        if kind is LISTENER and (
            "default_tls_container_ref" in given or "sni_container_refs" in given
        ):
            stored = (await self._repo.load(row.lb_id)).listeners.get(resource_id)
            if stored is not None:
                rules.check_certificate_refs(stored.protocol.value, given)
        if kind in (LISTENER, POOL):
            await self._tls.check(given, row.project_id)
        changes = builders.update_changes(given)
        reserved, subnets = self._config.reserved_ips, self._config.subnet_ids

        def command(state: LoadBalancerState) -> c.Command:
            current = getattr(state, kind.key).get(resource_id)
            if current is None or state.loadbalancer is None:
                raise NotFound.resource(kind.label, resource_id)
            final = _checked_changes(current, changes, state, reserved, subnets)
            return c.UpdateChild(kind=kind.key, child_id=resource_id, changes=final, now=_now())

        return await self._repo.execute(row.lb_id, command, meta)

    async def delete_child(
        self,
        ctx: RequestContext,
        kind: Kind,
        resource_id: str,
        meta: Metadata,
        parent_id: str | None = None,
    ) -> Outcome:
        row = await self._writable(ctx, kind, resource_id)
        if parent_id is not None and row.parent_id != parent_id:
            raise NotFound.resource(kind.label, resource_id)
        command = c.DeleteChild(kind=kind.key, child_id=resource_id)
        return await self._repo.execute(row.lb_id, command, meta)


def _checked_changes(
    current: Any,
    changes: dict[str, Any],
    state: LoadBalancerState,
    reserved: Collection[str],
    subnets: Collection[str],
) -> dict[str, Any]:
    """``changes`` completed by the kind's normalization, after checking the merged result."""
    assert state.loadbalancer is not None
    match current:
        case L7Policy():
            changes = rules.settle_l7policy(current.model_dump(mode="json"), changes)
    proposed = current.updated(changes)
    match proposed:
        case Listener():
            rules.check_listener(proposed, state.loadbalancer, creating=False)
        case Pool():
            rules.check_pool(proposed)
        case Member():
            rules.check_member(proposed, reserved, subnets)
        case HealthMonitor():
            defaults = rules.normalized_healthmonitor(proposed)
            changes = {**changes, **defaults}
            parent = state.pools.get(proposed.pool_id)
            if parent is not None:
                rules.check_healthmonitor_type(proposed, parent)
            rules.check_healthmonitor(proposed.updated(defaults))
        case L7Rule():
            rules.check_l7rule(proposed)
    return changes


def _check_fields_first(command: c.Command | CommandFactory, state: LoadBalancerState) -> None:
    """Octavia's order on create: every 400 (and 404) before the quota (403), the conflicts
    and the LB lock (409) and the provider (501). Runs the command's checks on ``state`` as
    if the LB were unlocked and lets only those errors through; the command runs every check
    again when it is executed under the quota."""
    lb = state.loadbalancer
    if lb is not None and lb.provisioning_status not in (
        ProvisioningStatus.ACTIVE,
        ProvisioningStatus.DELETED,
    ):
        unlocked = lb.model_copy(update={"provisioning_status": ProvisioningStatus.ACTIVE})
        state = state.model_copy(update={"loadbalancer": unlocked})
    try:
        decide(command(state) if callable(command) else command, state)
    except (Conflict, InvalidState, NotImplementedByProvider):
        return
