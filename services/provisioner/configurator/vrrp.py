"""VIPs on amphorae that own a VIP interface (the agent's GET /v1/vrrp names one; the netns
driver's do), plumbed after HAProxy runs.

SINGLE amphorae plug every VIP of the LB (with gratuitous ARP, or unsolicited neighbour
advertisements for IPv6); ACTIVE_STANDBY pairs get a keepalived.conf each
(rendering/keepalived.py: the amphora's own address as unicast source, the other amphorae as
peers, priority by role) and keepalived moves them. VRRP runs over the primary VIP's address
family: over the amphorae's IPv6 addresses when that VIP is IPv6 (a dual-stack netns network).
Elsewhere (loopback VIPs of the process driver) there is nothing to plumb, and neither on
ACTIVE_ACTIVE amphorae: the driver's distributor owns the VIP (and puts it on their ``lo``).

An ACTIVE_STANDBY amphora is only ever configured with its peer: ``check_pair`` refuses a
pair without one (LoneAmphora) before anything changes, so keepalived never runs a lone
multicast instance, and a survivor whose peer died keeps the config naming it (harmless
unicast adverts to a silent address) until the lifecycle pushes the pair with the replacement.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from libs.common.agent_contract import VrrpStatus
from libs.common.domain.model import LoadBalancerState, Topology
from libs.common.errors import FulcrumError
from services.provisioner.adapters.agent_client import AgentRejected
from services.provisioner.configurator.agents import AgentConnections, amphora_key
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.rendering.keepalived import KeepalivedContext, render_keepalived
from services.provisioner.settings import VrrpSettings


class LoneAmphora(FulcrumError):
    """An ACTIVE_STANDBY push named no peer amphora; nothing was changed on the amphora."""


def _over_ipv6(state: LoadBalancerState, amphorae: Sequence[AmphoraHandle]) -> bool:
    """VRRP speaks the primary VIP's family (as Octavia's vrrp_ip on the VIP subnet): IPv6
    when that VIP is IPv6 and every amphora has an IPv6 address beside its own."""
    lb = state.loadbalancer
    return (
        lb is not None
        and ipaddress.ip_address(lb.vip_address).version == 6
        and all(a.lb_network_ip6 is not None for a in amphorae)
    )


def _vrrp_address(handle: AmphoraHandle, ipv6: bool) -> str:
    return handle.lb_network_ip6 if ipv6 and handle.lb_network_ip6 else handle.lb_network_ip


def vrrp_peers(
    handle: AmphoraHandle, pair: Sequence[AmphoraHandle], ipv6: bool = False
) -> tuple[str, ...]:
    """The addresses ``handle`` advertises to: the pair's other amphorae, sorted, each once."""
    own = _vrrp_address(handle, ipv6)
    others = {_vrrp_address(p, ipv6) for p in pair if p.amphora_id != handle.amphora_id}
    return tuple(sorted(others - {own}))


def check_pair(
    state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
) -> None:
    """Raise LoneAmphora when ``handle`` is half of an ACTIVE_STANDBY pair without its peer."""
    lb = state.loadbalancer
    if lb is not None and lb.topology == Topology.ACTIVE_STANDBY and not vrrp_peers(handle, pair):
        raise LoneAmphora(
            f"amphora {handle.amphora_id} of ACTIVE_STANDBY load balancer {lb.id} was pushed "
            "without its peer (keepalived would advertise by multicast)"
        )


def render_vrrp(
    state: LoadBalancerState,
    handle: AmphoraHandle,
    pair: Sequence[AmphoraHandle],
    plumbing: VrrpStatus,
    options: VrrpSettings,
) -> str:
    """keepalived.conf of ``handle`` in the ACTIVE_STANDBY pair ``pair`` (unicast to the other
    amphorae); raises LoneAmphora when ``pair`` has no other amphora."""
    check_pair(state, handle, pair)
    lb = state.loadbalancer
    assert lb is not None and lb.vip_address is not None
    assert plumbing.interface and plumbing.check_script and plumbing.notify_script
    assert plumbing.notify_fifo
    ipv6 = _over_ipv6(state, [handle, *pair])
    context = KeepalivedContext(
        lb_id=lb.id,
        amphora_id=handle.amphora_id,
        role="MASTER" if handle.role == "MASTER" else "BACKUP",
        interface=plumbing.interface,
        unicast_src_ip=_vrrp_address(handle, ipv6),
        unicast_peers=vrrp_peers(handle, pair, ipv6),
        virtual_addresses=lb.all_vips(),
        check_script=plumbing.check_script,
        notify_script=plumbing.notify_script,
        notify_fifo=plumbing.notify_fifo,
        advert_int=options.advert_int,
        check_interval=options.check_interval,
        check_fall=options.check_fall,
        check_rise=options.check_rise,
    )
    return render_keepalived(context)


class VipPlumbing:
    """Plugs VIPs, or configures keepalived, on the amphorae that have a VIP interface."""

    def __init__(self, agents: AgentConnections, options: VrrpSettings) -> None:
        self._agents = agents
        self.options = options
        self._status: dict[str, VrrpStatus] = {}
        agents.on_forget(self._forget)

    async def status(self, handle: AmphoraHandle) -> VrrpStatus | None:
        """The amphora's VIP interface and keepalived script paths (cached), or None when its
        VIPs need no plumbing (no interface, or an agent without the VRRP endpoints)."""
        key = amphora_key(handle)
        status = self._status.get(key)
        if status is None and (await self._agents.info(handle)).has_vip_interface is False:
            return None  # its info says so: no /v1/vrrp round trip
        if status is None:
            try:
                status = await self._agents.client(handle).vrrp_status()
            except AgentRejected as exc:
                if exc.status != 404:
                    raise
                status = VrrpStatus.without_interface()
            self._status[key] = status
        return status if status.interface is not None else None

    def _forget(self, key: str) -> None:
        self._status.pop(key, None)

    async def plumb(
        self, state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
    ) -> None:
        """Give the LB's VIPs (the additional ones too) to the amphora (SINGLE) or to
        keepalived (ACTIVE_STANDBY)."""
        lb = state.loadbalancer
        if lb is None or lb.vip_address is None or lb.topology == Topology.ACTIVE_ACTIVE:
            return
        plumbing = await self.status(handle)
        if plumbing is None:
            return
        client = self._agents.client(handle)
        if lb.topology == Topology.ACTIVE_STANDBY:
            text = render_vrrp(state, handle, pair, plumbing, self.options)
            await client.apply_vrrp(text, list(lb.all_vips()))
        else:
            for address in lb.all_vips():
                await client.plug_vip(address)
