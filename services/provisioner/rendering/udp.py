"""UDP rendering: a pure function from a load balancer's state to the amphora's UDP part.

The HAProxy configuration serves the TCP family; UDP listeners are served in the amphora's
kernel (nftables, by the agent), from the ``UdpConfig`` rendered here: per enabled UDP
listener of an enabled LB, its VIP and port, its default pool's algorithm, SOURCE_IP
persistence (Octavia's default timeout 360 s, granularity one address), the live members and
the pool's monitor (``max_retries`` successes bring a member up, ``max_retries_down`` failures
take it down). A disabled or deleting pool leaves the listener without members.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from libs.common.agent_contract import (
    UdpAlgorithm,
    UdpConfig,
    UdpListener,
    UdpMember,
    UdpMonitor,
    UdpMonitorType,
)
from libs.common.domain.model import (
    HealthMonitor,
    Listener,
    ListenerProtocol,
    LoadBalancerState,
    ProvisioningStatus,
    Resource,
    SessionPersistenceType,
)

# keepalived's persistence_timeout when Octavia's SOURCE_IP persistence gives none.
DEFAULT_PERSISTENCE_TIMEOUT: Final = 360
_GONE: Final = frozenset({ProvisioningStatus.PENDING_DELETE, ProvisioningStatus.DELETED})
_MONITORS: Final = {t.value: t for t in UdpMonitorType}


def _serving(resource: Resource) -> bool:
    return resource.provisioning_status not in _GONE and bool(
        getattr(resource, "admin_state_up", True)
    )


def render_udp(state: LoadBalancerState) -> UdpConfig:
    """The UDP listeners ``state`` asks the amphora to serve (none: an empty config)."""
    lb = state.loadbalancer
    if lb is None or not lb.admin_state_up or lb.provisioning_status in _GONE:
        return UdpConfig()
    listeners = sorted(
        (
            li
            for li in state.listeners.values()
            if li.protocol is ListenerProtocol.UDP and _serving(li)
        ),
        key=lambda li: (li.protocol_port, li.id),
    )
    # DNAT keeps the family: a listener serves every VIP of the primary VIP's family.
    family = ipaddress.ip_address(lb.vip_address).version
    vips = [vip for vip in lb.all_vips() if ipaddress.ip_address(vip).version == family]
    return UdpConfig(listeners=[_listener(state, li, vips) for li in listeners])


def _listener(state: LoadBalancerState, listener: Listener, addresses: list[str]) -> UdpListener:
    pool = state.pools.get(listener.default_pool_id or "")
    if pool is None or not _serving(pool):
        return UdpListener(id=listener.id, addresses=addresses, port=listener.protocol_port)
    persistence = pool.session_persistence
    sticky = persistence is not None and persistence.type is SessionPersistenceType.SOURCE_IP
    members = sorted(
        (m for m in state.pool_members(pool.id) if m.provisioning_status not in _GONE),
        key=lambda m: (m.address, m.protocol_port, m.id),
    )
    return UdpListener(
        id=listener.id,
        pool_id=pool.id,
        addresses=addresses,
        port=listener.protocol_port,
        algorithm=UdpAlgorithm(pool.lb_algorithm.value),
        persistence_timeout=(
            (persistence.persistence_timeout or DEFAULT_PERSISTENCE_TIMEOUT)
            if sticky and persistence is not None
            else None
        ),
        persistence_granularity=persistence.persistence_granularity
        if sticky and persistence
        else None,
        members=[
            UdpMember(
                id=m.id,
                address=m.address,
                port=m.protocol_port,
                weight=m.weight,
                enabled=m.admin_state_up,
                monitor_address=m.monitor_address,
                monitor_port=m.monitor_port,
            )
            for m in members
        ],
        monitor=_monitor(state.pool_healthmonitor(pool.id)),
    )


def _monitor(hm: HealthMonitor | None) -> UdpMonitor | None:
    if hm is None or not _serving(hm) or hm.type.value not in _MONITORS:
        return None
    return UdpMonitor(
        type=_MONITORS[hm.type.value],
        delay=hm.delay,
        timeout=hm.timeout,
        rise=hm.max_retries,
        fall=hm.max_retries_down,
        http_method=hm.http_method or "GET",
        url_path=hm.url_path or "/",
        expected_codes=hm.expected_codes or "200",
        http_version=hm.http_version or 1.0,
        domain_name=hm.domain_name,
    )
