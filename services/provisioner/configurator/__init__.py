"""Configures amphorae: a load balancer's whole configuration pushed to each of its agents.

The configuration is always the whole LB, rendered by a pure function of its state; the agent
validates it and reloads HAProxy without dropping connections. The jobs, each in its module:

- agents.py: the provisioner's client certificate, one cached client and info per amphora;
- haproxy_config.py: the HAProxy configuration of an LB for one amphora;
- tls_delivery.py: the TLS files a configuration needs, uploaded before and pruned after;
- vrrp.py: the VIP plugged, or keepalived configured for an ACTIVE_STANDBY pair;
- runtime.py: member changes through HAProxy's runtime API, without a reload;
- udp_config.py: the UDP listeners, served by the amphora's kernel (nftables);
- security_groups.py: the VIP security groups as the amphora's nft filter.

``Configurator`` puts them together in the order a push needs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from libs.common.agent_contract import AgentInfo, VrrpStatus
from libs.common.domain.model import LoadBalancerState
from libs.common.pki import DeploymentCA
from libs.common.telemetry import tracer
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from services.provisioner.certificates import CertificateSource
from services.provisioner.configurator.agents import AgentConnections
from services.provisioner.configurator.haproxy_config import render_config
from services.provisioner.configurator.runtime import apply_server_ops
from services.provisioner.configurator.security_groups import RuleSource, SecurityGroupPush
from services.provisioner.configurator.tls_delivery import TlsDelivery
from services.provisioner.configurator.udp_config import UdpPush
from services.provisioner.configurator.vrrp import (
    LoneAmphora,
    VipPlumbing,
    check_pair,
    render_vrrp,
    vrrp_peers,
)
from services.provisioner.domain.runtime_changes import ServerOp
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.rendering import LogOffload, compile_templates
from services.provisioner.settings import VrrpSettings

__all__ = ["Configurator", "LoneAmphora", "vrrp_peers"]


class Configurator:
    """Pushes LB configurations to amphorae (``directory`` holds the provisioner's client
    certificate; ``certificates`` resolves TLS references, None: no keys configured;
    ``logs``: where the amphorae's HAProxy logs go; ``haproxy_threads``: each HAProxy's
    threads, None: one per CPU)."""

    def __init__(
        self,
        ca: DeploymentCA,
        directory: Path,
        vrrp: VrrpSettings | None = None,
        certificates: CertificateSource | None = None,
        security_groups: RuleSource | None = None,
        logs: LogOffload | None = None,
        haproxy_threads: int | None = None,
    ) -> None:
        self._logs = logs or LogOffload()
        self._haproxy_threads = haproxy_threads
        self._agents = AgentConnections(ca, directory)
        self._groups = SecurityGroupPush(self._agents, security_groups)
        self._tls = TlsDelivery(self._agents, certificates)
        self._vips = VipPlumbing(self._agents, vrrp or VrrpSettings())
        self._udp = UdpPush()
        compile_templates()  # here, not in the first push

    def client(self, handle: AmphoraHandle) -> AmphoraAgentClient:
        """The (cached) client of one amphora's agent."""
        return self._agents.client(handle)

    async def info(self, handle: AmphoraHandle) -> AgentInfo:
        return await self._agents.info(handle)

    async def warm(self, handle: AmphoraHandle) -> None:
        """Contact a spare that just booted, ahead of its claim (AgentConnections.warm)."""
        await self._agents.warm(handle)

    async def keep_warm(self) -> None:
        """Forever: keep the spares warmed here connected until claimed (AgentConnections)."""
        await self._agents.keep_warm()

    def adopt(self, handle: AmphoraHandle) -> None:
        """This process claimed the spare: its first push uses what ``warm`` fetched."""
        self._agents.adopt(handle)

    async def vip_plumbing(self, handle: AmphoraHandle) -> VrrpStatus | None:
        """The amphora's VIP interface and keepalived scripts, or None: nothing to plumb."""
        return await self._vips.status(handle)

    def render_vrrp(
        self,
        state: LoadBalancerState,
        handle: AmphoraHandle,
        pair: Sequence[AmphoraHandle],
        plumbing: VrrpStatus,
    ) -> str:
        """keepalived.conf of ``handle`` in ``pair``; raises LoneAmphora without a peer."""
        return render_vrrp(state, handle, pair, plumbing, self._vips.options)

    async def push(
        self,
        state: LoadBalancerState,
        handle: AmphoraHandle,
        pair: Sequence[AmphoraHandle] = (),
    ) -> None:
        """Deliver TLS files, render and apply on one amphora, remove the TLS files the
        previous configuration used and this one does not, filter the VIPs by the LB's
        security groups, then plumb the VIP; raises the agent client's InfrastructureErrors,
        CertificateUnavailable and SecurityGroupsUnenforceable.

        ``pair`` is every amphora of the LB (for ACTIVE_STANDBY peers); an ACTIVE_STANDBY
        amphora without a peer in it raises LoneAmphora before anything is changed.
        """
        check_pair(state, handle, pair)
        previous = await self._tls.in_use(handle)
        with tracer(__name__).start_as_current_span("render"):
            text, used = await self._render(state, handle)
        with tracer(__name__).start_as_current_span("apply"):
            await self._agents.client(handle).apply_config(text, check_later=True)
        await self._udp.push(state, self._agents.client(handle), await self._agents.info(handle))
        await self._tls.installed(handle, used, previous)
        await self._groups.push(state, handle)
        await self._vips.plumb(state, handle, pair)

    async def push_security_groups(self, state: LoadBalancerState, handle: AmphoraHandle) -> None:
        """Apply only the LB's VIP security groups on one amphora (a group's rules changed)."""
        await self._groups.push(state, handle)

    async def _render(
        self, state: LoadBalancerState, handle: AmphoraHandle
    ) -> tuple[str, frozenset[str]]:
        """The config and the TLS files it uses, which are on the amphora once this returns."""
        tls = await self._tls.deliver(state, handle)
        info = await self._agents.info(handle)
        return render_config(state, info, tls, self._logs, self._haproxy_threads), tls.files

    async def rendered(self, state: LoadBalancerState, handle: AmphoraHandle) -> str:
        """The config ``push`` would apply (its TLS files delivered), for runtime changes."""
        text, _ = await self._render(state, handle)
        return text

    async def apply_runtime(
        self, handle: AmphoraHandle, ops: Sequence[ServerOp], rendered: str
    ) -> None:
        """Make ``ops`` through the runtime API, then store ``rendered`` for the next reload."""
        await apply_server_ops(self._agents.client(handle), ops, rendered)

    async def forget(self, amphora_id: str) -> None:
        """Drop what is cached of an amphora that is gone."""
        await self._agents.forget(amphora_id)

    async def close(self) -> None:
        await self._agents.close()
