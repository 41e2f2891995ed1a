"""The pure keepalived renderer for ACTIVE_STANDBY: ``render_keepalived(ctx) -> str``.

One VRRP instance per load balancer, unicast VRRPv3 between the pair (``unicast_src_ip`` is the
amphora's own address, ``unicast_peer`` the other's), sub-second adverts (keepalived moves the
VIP of a dead master in about 3 adverts plus a skew: 0.4 s at ``advert_int 0.1``), the VIPs as
``/32`` (IPv4) or ``/128`` (IPv6) host addresses on the VIP interface, and HAProxy tracked by
the agent's check script (whole-second interval: keepalived 2.2.7 refuses fractions there).
Priorities follow Octavia: MASTER 100, BACKUP 90. Both start as BACKUP with ``nopreempt``: the
first election goes to the higher priority, and afterwards whoever holds the VIP keeps it, so a
replacement joining the pair after a failover does not move the VIP a second time (that would
cut the connections the survivor carries, since HAProxy keeps no connection state across
amphorae).

VRRP advertises one address family, the unicast source's: VIPs of that family go in
``virtual_ipaddress``, the others (a dual-stack LB's) in ``virtual_ipaddress_excluded``, which
keepalived moves alike without advertising them (as Octavia does). On takeover keepalived
announces every VIP: gratuitous ARP for IPv4, unsolicited neighbour advertisements for IPv6
(``vrrp_garp_master_*`` governs both).

Unicast only: a context without a peer other than the amphora itself is refused (keepalived
would advertise by multicast then). A lone survivor keeps the config naming its dead peer:
adverts to a silent address are harmless, and it holds the VIP as MASTER meanwhile.
"""

from __future__ import annotations

import hashlib
import ipaddress
from functools import cache
from pathlib import Path
from typing import Final, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["PRIORITIES", "KeepalivedContext", "render_keepalived", "virtual_router_id"]

_TEMPLATES: Final = Path(__file__).parent / "templates"
_TEMPLATE: Final = "keepalived.conf.j2"
PRIORITIES: Final = {"MASTER": 100, "BACKUP": 90}
# Paths keepalived reads inside double quotes: nothing that would end or split the token.
_PATH_PATTERN: Final = r'^/[^"\s\\]+$'


def virtual_router_id(lb_id: str) -> int:
    """A stable VRID in 1..255 per load balancer (unicast pairs never hear each other, but
    distinct ids keep logs and captures readable on a shared segment)."""
    return int(hashlib.sha256(lb_id.encode()).hexdigest()[:8], 16) % 255 + 1


def _address(value: str) -> str:
    return str(ipaddress.ip_address(value))


class KeepalivedContext(BaseModel):
    """Everything one amphora's keepalived.conf depends on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lb_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    amphora_id: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    role: Literal["MASTER", "BACKUP"]
    interface: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,15}$")
    unicast_src_ip: str
    unicast_peers: tuple[str, ...]
    # Every VIP of the LB (the primary first); IPv4 and IPv6 may mix.
    virtual_addresses: tuple[str, ...] = Field(min_length=1)
    check_script: str = Field(pattern=_PATH_PATTERN)
    notify_script: str = Field(pattern=_PATH_PATTERN)
    notify_fifo: str = Field(pattern=_PATH_PATTERN)
    # VRRPv3 carries the interval in centiseconds (keepalived would round anything finer).
    advert_int: float = Field(default=0.1, ge=0.01, le=40.0, multiple_of=0.01)
    check_interval: int = Field(default=1, ge=1)
    check_fall: int = Field(default=2, ge=1)
    check_rise: int = Field(default=2, ge=1)
    garp_repeat: int = Field(default=3, ge=1)
    garp_refresh: int = Field(default=5, ge=0)

    @field_validator("unicast_src_ip")
    @classmethod
    def _src(cls, value: str) -> str:
        return _address(value)

    @field_validator("unicast_peers", "virtual_addresses")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_address(item) for item in value)

    @model_validator(mode="after")
    def _has_peer(self) -> KeepalivedContext:
        if not self.peers():
            raise ValueError("unicast_peers must name the other amphora (no multicast fallback)")
        return self

    def peers(self) -> tuple[str, ...]:
        """The unicast peers without the amphora's own address, sorted, each once."""
        return tuple(sorted(set(self.unicast_peers) - {self.unicast_src_ip}))


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _host(address: str) -> str:
    return f"{address}/{32 if ipaddress.ip_address(address).version == 4 else 128}"


def render_keepalived(ctx: KeepalivedContext) -> str:
    """The complete keepalived.conf for one amphora of an ACTIVE_STANDBY pair. Pure."""
    compact = ctx.lb_id.replace("-", "")
    family = ipaddress.ip_address(ctx.unicast_src_ip).version

    def same_family(address: str) -> bool:
        return ipaddress.ip_address(address).version == family

    view = {
        "lb_id": ctx.lb_id,
        "amphora_id": ctx.amphora_id,
        "role": ctx.role,
        "router_id": f"amp_{ctx.amphora_id.replace('-', '')[:12]}",
        "instance": f"lb_{compact}",
        "interface": ctx.interface,
        "vrid": virtual_router_id(ctx.lb_id),
        "priority": PRIORITIES[ctx.role],
        "advert_int": format(ctx.advert_int, "g"),
        "unicast_src_ip": ctx.unicast_src_ip,
        "unicast_peers": ctx.peers(),
        "virtual_addresses": [_host(a) for a in ctx.virtual_addresses if same_family(a)],
        "excluded_addresses": [_host(a) for a in ctx.virtual_addresses if not same_family(a)],
        "check_script": ctx.check_script,
        "notify_script": ctx.notify_script,
        "notify_fifo": ctx.notify_fifo,
        "check_interval": ctx.check_interval,
        "check_fall": ctx.check_fall,
        "check_rise": ctx.check_rise,
        "garp_repeat": ctx.garp_repeat,
        "garp_refresh": ctx.garp_refresh,
    }
    return _environment().get_template(_TEMPLATE).render(view)
