"""LoadBalancerState → the view model the HAProxy templates render.

Every decision about *what* to render lives here; Octavia's vocabulary is mapped to HAProxy's
through the dicts below. User strings stay raw: the templates escape them at the point of use.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final

from libs.common.domain.model import (
    LISTENER_POOL_PROTOCOLS,
    HealthMonitor,
    HealthMonitorType,
    L7Action,
    L7CompareType,
    L7Policy,
    L7Rule,
    L7RuleType,
    LbAlgorithm,
    Listener,
    ListenerProtocol,
    LoadBalancer,
    LoadBalancerState,
    Member,
    Pool,
    PoolProtocol,
    ProvisioningStatus,
    Resource,
    SessionPersistenceType,
)
from libs.common.errors import FulcrumError
from services.provisioner.rendering.context import RenderContext

__all__ = ["RenderError", "ViewModel", "backend_name", "build_view_model"]

ViewModel = dict[str, Any]


class RenderError(FulcrumError):
    """The state breaks an invariant the renderer relies on (the API validates all of these,
    so this means a bug upstream), or the context lacks something the state needs."""


# Proxy and server names must stay within what the agent's runtime API accepts.
_NAME: Final = re.compile(r"[A-Za-z0-9_.:-]{1,127}")
_SKIPPED_STATUSES: Final = frozenset(
    {ProvisioningStatus.PENDING_DELETE, ProvisioningStatus.DELETED}
)

# sess scope: the port is per connection, so keep-alive requests hash identically.
_SRC_PORT_VAR: Final = "sess.fulcrum_src_port"
BALANCE_ALGORITHMS: Final[dict[LbAlgorithm, str]] = {
    LbAlgorithm.ROUND_ROBIN: "roundrobin",
    LbAlgorithm.LEAST_CONNECTIONS: "leastconn",
    LbAlgorithm.SOURCE_IP: "source",
    LbAlgorithm.SOURCE_IP_PORT: f"hash src,concat(:,{_SRC_PORT_VAR})",
}
# Map-based hashing would refuse `add server`; consistent hashing keeps servers dynamic.
_HASHED_ALGORITHMS: Final = frozenset({LbAlgorithm.SOURCE_IP, LbAlgorithm.SOURCE_IP_PORT})

LISTENER_MODES: Final[dict[ListenerProtocol, str]] = {
    ListenerProtocol.HTTP: "http",
    ListenerProtocol.TERMINATED_HTTPS: "http",
    ListenerProtocol.PROMETHEUS: "http",
    ListenerProtocol.TCP: "tcp",
    ListenerProtocol.HTTPS: "tcp",
}
# PROXY and PROXYV2 pools are absent: they speak the listener's mode.
POOL_MODES: Final[dict[PoolProtocol, str]] = {
    PoolProtocol.HTTP: "http",
    PoolProtocol.HTTPS: "tcp",
    PoolProtocol.TCP: "tcp",
}
PROXY_PROTOCOL_OPTIONS: Final[dict[PoolProtocol, str]] = {
    PoolProtocol.PROXY: "send-proxy",
    PoolProtocol.PROXYV2: "send-proxy-v2",
}
COMPARE_MATCHERS: Final[dict[L7CompareType, str]] = {
    L7CompareType.REGEX: "reg",
    L7CompareType.STARTS_WITH: "beg",
    L7CompareType.ENDS_WITH: "end",
    L7CompareType.CONTAINS: "sub",
    L7CompareType.EQUAL_TO: "str",
}


@dataclass(frozen=True)
class _Fetch:
    name: str
    argument: str | None = None  # a fixed argument, e.g. the Host header's name
    keyed: bool = False  # the rule's `key` is the argument
    case_insensitive: bool = False


RULE_FETCHES: Final[dict[L7RuleType, _Fetch]] = {
    L7RuleType.HOST_NAME: _Fetch("req.hdr", argument="host", case_insensitive=True),
    L7RuleType.PATH: _Fetch("path"),
    L7RuleType.FILE_TYPE: _Fetch("path"),
    L7RuleType.HEADER: _Fetch("req.hdr", keyed=True),
    L7RuleType.COOKIE: _Fetch("req.cook", keyed=True),
    L7RuleType.SSL_CONN_HAS_CERT: _Fetch("ssl_c_used"),
    L7RuleType.SSL_VERIFY_RESULT: _Fetch("ssl_c_verify"),
    L7RuleType.SSL_DN_FIELD: _Fetch("ssl_c_s_dn", keyed=True),
}
L7_ACTIONS: Final[dict[L7Action, str]] = {
    L7Action.REJECT: "deny",
    L7Action.REDIRECT_TO_URL: "location",
    L7Action.REDIRECT_PREFIX: "prefix",
    L7Action.REDIRECT_TO_POOL: "use_backend",
}
_DEFAULT_REDIRECT_CODE: Final = 302

# insert_headers with a "true" value → the log-format expression that fills the header.
# X-Forwarded-For is `option forwardfor`; X-Forwarded-Proto depends on the listener.
REQUEST_HEADERS: Final[dict[str, str]] = {
    "X-Forwarded-Port": "%[dst_port]",
    "X-Forwarded-IP": "%[src]",
    "X-Client-IP": "%[src]",
    "X-Real-IP": "%[src]",
}
CLIENT_CERT_HEADERS: Final[dict[str, str]] = {
    "X-SSL-Client-Verify": "%[ssl_c_verify]",
    "X-SSL-Client-Has-Cert": "%[ssl_c_used]",
    "X-SSL-Client-DN": "%{+Q}[ssl_c_s_dn]",
    "X-SSL-Client-CN": "%{+Q}[ssl_c_s_dn(cn)]",
    "X-SSL-Issuer": "%{+Q}[ssl_c_i_dn]",
    "X-SSL-Client-SHA1": "%{+Q}[ssl_c_sha1,hex]",
    "X-SSL-Client-Not-Before": "%{+Q}[ssl_c_notbefore]",
    "X-SSL-Client-Not-After": "%{+Q}[ssl_c_notafter]",
}
FORWARDED_PROTO: Final[dict[ListenerProtocol, str]] = {
    ListenerProtocol.HTTP: "http",
    ListenerProtocol.TERMINATED_HTTPS: "https",
}

CLIENT_VERIFY_MODES: Final[dict[str, str]] = {
    "NONE": "none",
    "OPTIONAL": "optional",
    "MANDATORY": "required",
}
# A TLS version not in the allowed list is switched off with this bind/server keyword.
TLS_VERSION_DISABLERS: Final[dict[str, str]] = {
    "SSLv3": "no-sslv3",
    "TLSv1": "no-tlsv10",
    "TLSv1.1": "no-tlsv11",
    "TLSv1.2": "no-tlsv12",
    "TLSv1.3": "no-tlsv13",
}
_DEFAULT_TLS_VERSIONS: Final = ("TLSv1.2", "TLSv1.3")

# Health monitor types HAProxy runs; UDP-CONNECT and SCTP belong to UDP/SCTP pools.
_HTTP_MONITORS: Final = frozenset({HealthMonitorType.HTTP, HealthMonitorType.HTTPS})
_TLS_MONITORS: Final = frozenset({HealthMonitorType.HTTPS, HealthMonitorType.TLS_HELLO})
_HAPROXY_MONITORS: Final = frozenset(
    {
        HealthMonitorType.HTTP,
        HealthMonitorType.HTTPS,
        HealthMonitorType.TCP,
        HealthMonitorType.TLS_HELLO,
        HealthMonitorType.PING,
    }
)
_STATUS_CODE: Final = re.compile(r"[1-5][0-9]{2}")
_L7_SELECTION_VAR: Final = "txn.fulcrum_l7policy"


def backend_name(pool_id: str, listener_id: str) -> str:
    """The backend serving ``pool_id`` behind ``listener_id`` (one per pair, as in Octavia)."""
    return f"{pool_id}:{listener_id}"


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise RenderError(f"id {value!r} cannot name an HAProxy proxy, server or ACL")
    return value


def _live(resource: Resource) -> bool:
    return resource.provisioning_status not in _SKIPPED_STATUSES


def _enabled(resource: Resource) -> bool:
    return _live(resource) and resource.admin_state_up


def _ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise RenderError(f"{what} {value!r} is not an IP address") from None


def _host(value: str, what: str) -> str:
    """An address as HAProxy wants it before `:port` or alone: IPv6 in brackets."""
    address = _ip(value, what)
    return f"[{address}]" if address.version == 6 else str(address)


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise RenderError(f"allowed CIDR {value!r} is not a network") from None


def _status_regex(expected_codes: str | None) -> str:
    """`200`, `200,202`, `200-204` → an anchored alternation for `http-check expect rstatus`."""
    codes: list[str] = []
    for part in (expected_codes or "200").split(","):
        low, _, high = part.strip().partition("-")
        high = high or low
        valid = _STATUS_CODE.fullmatch(low) and _STATUS_CODE.fullmatch(high) and low <= high
        if not valid:
            raise RenderError(f"expected_codes {expected_codes!r} is not NNN, NNN,NNN or NNN-NNN")
        codes.extend(str(code) for code in range(int(low), int(high) + 1))
    return "^(" + "|".join(dict.fromkeys(codes)) + ")$"


def _disabled_tls_versions(allowed: tuple[str, ...] | None) -> list[str]:
    permitted = set(allowed if allowed is not None else _DEFAULT_TLS_VERSIONS)
    return [flag for version, flag in TLS_VERSION_DISABLERS.items() if version not in permitted]


class _Builder:
    """One rendering pass: the state's live resources, ordered, plus the context."""

    def __init__(self, state: LoadBalancerState, ctx: RenderContext) -> None:
        if state.loadbalancer is None:
            raise RenderError("the state has no load balancer")
        self.lb: LoadBalancer = state.loadbalancer
        self.state = state
        self.ctx = ctx
        self.pools = {pid: p for pid, p in state.pools.items() if _live(p)}

    # -- listeners ---------------------------------------------------------------------------

    def rendered_listeners(self) -> list[Listener]:
        """Enabled listeners HAProxy serves, by port: UDP/SCTP are not HAProxy's, and a
        TERMINATED_HTTPS listener needs its certificate files from the context."""
        if not self.lb.admin_state_up:
            return []
        listeners = [
            li
            for li in self.state.listeners.values()
            if _enabled(li)
            and li.protocol in LISTENER_MODES
            and (
                li.protocol is not ListenerProtocol.TERMINATED_HTTPS
                or li.id in self.ctx.listener_tls
            )
        ]
        return sorted(listeners, key=lambda li: (li.protocol_port, li.id))

    def maxconn(self, listener: Listener) -> int:
        limit = listener.connection_limit
        wanted = limit if limit > 0 else self.ctx.default_connection_limit
        return min(wanted, self.ctx.maxconn_cap)

    def frontend(self, listener: Listener) -> ViewModel:
        mode = LISTENER_MODES[listener.protocol]
        http = mode == "http"
        policies = self.policies(listener) if http else []
        prometheus = listener.protocol is ListenerProtocol.PROMETHEUS
        default_pool = None if prometheus else self.pools.get(listener.default_pool_id or "")
        return {
            "name": _name(listener.id),
            "description": listener.name,
            "mode": mode,
            "binds": self.binds(listener),
            "maxconn": self.maxconn(listener),
            "timeout_client": listener.timeout_client_data,
            "log_format": _log_format(self.ctx, self.lb, http),
            "inspect_delay": listener.timeout_tcp_inspect or None,
            "allowed_cidrs": [_cidr(c) for c in listener.allowed_cidrs or ()],
            "http": http,
            "forwardfor": http and self.header_on(listener, "X-Forwarded-For"),
            "request_headers": self.request_headers(listener) if http else [],
            "hsts": self.hsts(listener),
            "prometheus": prometheus,
            "acls": [acl for policy in policies for acl in policy["acls"]],
            "selection_var": _L7_SELECTION_VAR,
            "policies": policies,
            # HAProxy runs all http-request rules before any use_backend: render them so.
            "http_actions": [p for p in policies if p["kind"] != "use_backend"],
            "use_backends": [p for p in policies if p["kind"] == "use_backend"],
            "default_backend": (
                backend_name(default_pool.id, listener.id) if default_pool is not None else None
            ),
            # Pools this frontend sends traffic to: each gets a backend for this listener.
            "pool_ids": ([default_pool.id] if default_pool is not None else [])
            + [p["pool_id"] for p in policies if p["kind"] == "use_backend"],
        }

    def binds(self, listener: Listener) -> list[ViewModel]:
        """One `bind` per VIP of the LB (the primary first), each with the listener's options."""
        addresses = (self.ctx.bind_address,) if self.ctx.bind_address else self.lb.all_vips()
        files = self.ctx.listener_tls.get(listener.id)
        options: list[tuple[str, object | None]] = []
        if listener.protocol is ListenerProtocol.TERMINATED_HTTPS and files is not None:
            options += [("ssl", None), ("crt-list", files.crt_list)]
            if files.client_ca:
                verify = CLIENT_VERIFY_MODES.get(listener.client_authentication, "none")
                options += [("ca-file", files.client_ca), ("verify", verify)]
                if files.client_crl:
                    options.append(("crl-file", files.client_crl))
            if listener.tls_ciphers:
                options.append(("ciphers", listener.tls_ciphers))
            options += [(flag, None) for flag in _disabled_tls_versions(listener.tls_versions)]
            if listener.alpn_protocols:
                options.append(("alpn", ",".join(listener.alpn_protocols)))
        return [
            {
                "address": _host(address, "VIP address"),
                "port": listener.protocol_port,
                "options": options,
            }
            for address in addresses
        ]

    @staticmethod
    def header_on(listener: Listener, header: str) -> bool:
        return listener.insert_headers.get(header, "").strip().lower() == "true"

    def request_headers(self, listener: Listener) -> list[tuple[str, str]]:
        headers = [
            (name, value)
            for name, value in REQUEST_HEADERS.items()
            if self.header_on(listener, name)
        ]
        proto = FORWARDED_PROTO.get(listener.protocol)
        if proto is not None and self.header_on(listener, "X-Forwarded-Proto"):
            headers.append(("X-Forwarded-Proto", proto))
        if listener.protocol is ListenerProtocol.TERMINATED_HTTPS:
            headers.extend(
                (name, value)
                for name, value in CLIENT_CERT_HEADERS.items()
                if self.header_on(listener, name)
            )
        return headers

    @staticmethod
    def hsts(listener: Listener) -> str | None:
        if listener.protocol is not ListenerProtocol.TERMINATED_HTTPS:
            return None
        if listener.hsts_max_age is None:
            return None
        value = f"max-age={listener.hsts_max_age};"
        if listener.hsts_include_subdomains:
            value += " includeSubDomains;"
        if listener.hsts_preload:
            value += " preload;"
        return value

    # -- L7 ----------------------------------------------------------------------------------

    def policies(self, listener: Listener) -> list[ViewModel]:
        """Enabled policies with at least one enabled rule, by position.

        Octavia's semantics is "the first matching policy wins". HAProxy runs every
        `http-request` rule before any `use_backend`, so each policy first claims the request
        in a transaction variable (only if no earlier policy did), and the actions then test
        that variable: positions are honoured whatever the actions are.
        """
        views: list[ViewModel] = []
        for policy in self.state.listener_policies(listener.id):
            if not _enabled(policy):
                continue
            rules = [r for r in self.state.policy_rules(policy.id) if _enabled(r)]
            if not rules:
                continue
            view = self.policy_action(policy, listener)
            if view is None:
                continue
            view["id"] = _name(policy.id)
            view["acls"] = [self.acl(rule) for rule in rules]
            view["conditions"] = [
                ("!" if acl["negate"] else "") + acl["name"] for acl in view["acls"]
            ]
            views.append(view)
        return views

    def policy_action(self, policy: L7Policy, listener: Listener) -> ViewModel | None:
        kind = L7_ACTIONS[policy.action]
        code = policy.redirect_http_code or _DEFAULT_REDIRECT_CODE
        if policy.action is L7Action.REDIRECT_TO_POOL:
            pool = self.pools.get(policy.redirect_pool_id or "")
            if pool is None:
                return None
            return {
                "kind": kind,
                "pool_id": pool.id,
                "backend": backend_name(_name(pool.id), listener.id),
            }
        if policy.action is L7Action.REDIRECT_TO_URL:
            if not policy.redirect_url:
                return None
            return {"kind": kind, "code": code, "target": policy.redirect_url}
        if policy.action is L7Action.REDIRECT_PREFIX:
            if not policy.redirect_prefix:
                return None
            return {"kind": kind, "code": code, "target": policy.redirect_prefix}
        return {"kind": kind}

    @staticmethod
    def acl(rule: L7Rule) -> ViewModel:
        fetch = RULE_FETCHES[rule.type]
        argument = fetch.argument
        if fetch.keyed:
            if not rule.key:
                raise RenderError(f"L7 rule {rule.id} of type {rule.type} has no key")
            argument = rule.key
        flags: list[str] = ["-i"] if fetch.case_insensitive else []
        patterns: list[str] = []
        negate = rule.invert
        if rule.type is L7RuleType.SSL_CONN_HAS_CERT:
            # A boolean fetch: "false" asks for the absence of a client certificate.
            negate = negate != (rule.value.strip().lower() == "false")
        elif rule.type is L7RuleType.SSL_VERIFY_RESULT:
            if not rule.value.strip().isdigit():
                raise RenderError(f"L7 rule {rule.id}: verify result {rule.value!r}")
            flags, patterns = ["-m", "int"], [rule.value.strip()]
        elif rule.type is L7RuleType.FILE_TYPE and rule.compare_type is L7CompareType.EQUAL_TO:
            # The file type is the extension: "jpg" matches paths ending in ".jpg".
            flags, patterns = ["-m", "end"], ["." + rule.value.lstrip(".")]
        else:
            flags += ["-m", COMPARE_MATCHERS[rule.compare_type]]
            patterns = [rule.value]
        return {
            "name": _name(rule.id),
            "fetch": fetch.name,
            "fetch_arg": argument,
            "flags": flags,
            "patterns": patterns,
            "negate": negate,
        }

    # -- pools -------------------------------------------------------------------------------

    def backend_pairs(
        self, frontends: list[tuple[Listener, ViewModel]]
    ) -> list[tuple[Pool, Listener]]:
        """(pool, listener) for each backend a rendered frontend refers to, in frontend order."""
        pairs: dict[str, tuple[Pool, Listener]] = {}
        for listener, view in frontends:
            for pool_id in view["pool_ids"]:
                pool = self.pools[pool_id]
                if pool.protocol not in LISTENER_POOL_PROTOCOLS[listener.protocol]:
                    raise RenderError(
                        f"pool {pool.id} ({pool.protocol}) cannot serve listener "
                        f"{listener.id} ({listener.protocol})"
                    )
                pairs.setdefault(backend_name(pool_id, listener.id), (pool, listener))
        return list(pairs.values())

    def backend(self, pool: Pool, listener: Listener) -> ViewModel:
        listener_mode = LISTENER_MODES[listener.protocol]
        mode = POOL_MODES.get(pool.protocol, listener_mode)
        monitor = self.monitor(pool)
        persistence = pool.session_persistence
        persistence_type = persistence.type if persistence else None
        cookie_name = persistence.cookie_name if persistence else None
        http = mode == "http"
        stick: ViewModel | None = None
        if persistence_type is SessionPersistenceType.SOURCE_IP:
            stick = {"table": "ipv6", "cookie": None}
        elif persistence_type is SessionPersistenceType.APP_COOKIE and http and cookie_name:
            stick = {"table": "string len 64", "cookie": cookie_name}
        members = sorted(
            (m for m in self.state.pool_members(pool.id) if _live(m)),
            key=lambda m: (m.created_at, m.id),
        )
        insert_cookie = persistence_type is SessionPersistenceType.HTTP_COOKIE and http
        return {
            "name": backend_name(_name(pool.id), _name(listener.id)),
            "description": pool.name,
            "mode": mode,
            "balance": BALANCE_ALGORITHMS[pool.lb_algorithm],
            "consistent_hash": pool.lb_algorithm in _HASHED_ALGORITHMS,
            "src_port_var": (
                _SRC_PORT_VAR if pool.lb_algorithm is LbAlgorithm.SOURCE_IP_PORT else None
            ),
            "stick": stick,
            "stick_table_size": self.ctx.stick_table_size,
            "peers": self.peers_section() if self.ctx.peers else None,
            "insert_cookie": insert_cookie,
            "monitor": monitor,
            "fullconn": self.maxconn(listener),
            "timeout_connect": listener.timeout_member_connect,
            "timeout_server": listener.timeout_member_data,
            "servers": [
                self.server(m, pool, monitor, insert_cookie=insert_cookie) for m in members
            ],
        }

    def monitor(self, pool: Pool) -> ViewModel | None:
        hm: HealthMonitor | None = self.state.pool_healthmonitor(pool.id)
        if hm is None or not _enabled(hm) or hm.type not in _HAPROXY_MONITORS:
            return None
        view: ViewModel = {
            "type": hm.type.value,
            # HAProxy refuses a zero check interval; the API allows delay 0.
            "inter": max(hm.delay, 1),
            "fall": hm.max_retries_down,
            "rise": hm.max_retries,
            "timeout": hm.timeout or None,
            "ssl": hm.type in _TLS_MONITORS
            or (pool.tls_enabled and hm.type is HealthMonitorType.HTTP),
            "http": None,
            "external_command": None,
        }
        if hm.type in _HTTP_MONITORS:
            version = "HTTP/1.1" if hm.http_version == 1.1 else "HTTP/1.0"
            view["http"] = {
                "method": (hm.http_method or "GET").upper(),
                "path": hm.url_path or "/",
                "version": version,
                "host": hm.domain_name if version == "HTTP/1.1" and hm.domain_name else None,
                "status_regex": _status_regex(hm.expected_codes),
            }
        elif hm.type is HealthMonitorType.PING:
            if self.ctx.external_check_command is None:
                raise RenderError(
                    f"pool {pool.id} has a PING health monitor but its amphora cannot ping "
                    "(no external_check_command)"
                )
            view["external_command"] = self.ctx.external_check_command
        return view

    def server(
        self, member: Member, pool: Pool, monitor: ViewModel | None, *, insert_cookie: bool
    ) -> ViewModel:
        """A `server` line as ordered (keyword, value) options; values are escaped on output."""
        options: list[tuple[str, object | None]] = [("weight", member.weight)]
        if monitor is not None:
            options += [
                ("check", None),
                ("inter", f"{monitor['inter']}s"),
                ("fall", monitor["fall"]),
                ("rise", monitor["rise"]),
            ]
            if member.monitor_address:
                options.append(("addr", _host(member.monitor_address, "monitor address")))
            if member.monitor_port:
                options.append(("port", member.monitor_port))
            # Checks inherit the server's `ssl` unless addr/port point them elsewhere.
            inherits_ssl = pool.tls_enabled and not (member.monitor_address or member.monitor_port)
            if monitor["ssl"] and not inherits_ssl:
                options.append(("check-ssl", None))
                if not pool.tls_enabled:
                    options.append(("verify", "none"))
        if insert_cookie:
            options.append(("cookie", _name(member.id)))
        proxy_option = PROXY_PROTOCOL_OPTIONS.get(pool.protocol)
        if proxy_option is not None:
            options.append((proxy_option, None))
        if pool.tls_enabled:
            options += self.server_tls(pool)
        if member.backup:
            options.append(("backup", None))
        if not (member.admin_state_up and pool.admin_state_up):
            options.append(("disabled", None))
        return {
            "name": _name(member.id),
            "address": _host(member.address, "member address"),
            "port": member.protocol_port,
            "options": options,
        }

    def server_tls(self, pool: Pool) -> list[tuple[str, object | None]]:
        files = self.ctx.pool_tls.get(pool.id)
        options: list[tuple[str, object | None]] = [("ssl", None)]
        if files is not None and files.client_cert:
            options.append(("crt", files.client_cert))
        if files is not None and files.ca:
            options += [("ca-file", files.ca), ("verify", "required")]
            if files.crl:
                options.append(("crl-file", files.crl))
        else:
            options.append(("verify", "none"))
        if pool.tls_ciphers:
            options.append(("ciphers", pool.tls_ciphers))
        options += [(flag, None) for flag in _disabled_tls_versions(pool.tls_versions)]
        if pool.alpn_protocols:
            options.append(("alpn", ",".join(pool.alpn_protocols)))
        return options

    # -- global ------------------------------------------------------------------------------

    def peers_section(self) -> str:
        return f"{_name(self.lb.id)}_peers"

    def peers(self) -> ViewModel | None:
        if not self.ctx.peers:
            return None
        return {
            "name": self.peers_section(),
            "peers": [
                {
                    "name": peer.name,
                    "address": _host(peer.address, "peer address"),
                    "port": peer.port,
                }
                for peer in self.ctx.peers
            ],
        }


def _log_literal(value: str) -> str:
    """``value`` as literal text of a log-format (no `%` variables)."""
    return value.replace("%", "%%")


def _log_format(ctx: RenderContext, lb: LoadBalancer, http: bool) -> str | None:
    """Octavia's access-log line of a listener of ``lb``, or None: nothing logged (no
    target, or ``connection_logging`` off). HTTP-only fields become `-` on TCP listeners."""
    logs = ctx.logs
    if not (logs.enabled and logs.connection_logging):
        return None
    text = logs.user_log_format.replace("{{ project_id }}", _log_literal(lb.project_id))
    text = text.replace("{{ lb_id }}", _log_literal(lb.id))
    if not http:
        for field in ("%{+Q}r", "%r", "%{+Q}ST", "%ST"):
            text = text.replace(field, "-")
    return text


def _log_view(ctx: RenderContext) -> ViewModel:
    """The `log` lines of `global` and the `log` directive of `defaults` (None: none)."""
    logs = ctx.logs
    targets = [
        {"address": t.address, "facility": "local0", "level": None} for t in logs.tenant_targets
    ]
    targets += [
        {"address": t.address, "facility": "local1", "level": "notice"} for t in logs.admin_targets
    ]
    directive = None
    if logs.enabled:
        directive = "log global" if logs.connection_logging else "no log"
    return {"targets": targets, "defaults": directive}


def build_view_model(state: LoadBalancerState, ctx: RenderContext) -> ViewModel:
    """The whole view model of ``state``; raises RenderError (see there)."""
    builder = _Builder(state, ctx)
    listeners = builder.rendered_listeners()
    frontends = [(listener, builder.frontend(listener)) for listener in listeners]
    backends = [builder.backend(pool, li) for pool, li in builder.backend_pairs(frontends)]
    frontend_views = [view for _, view in frontends]
    wanted = sum(view["maxconn"] for view in frontend_views)
    ping = any(b["monitor"] and b["monitor"]["external_command"] for b in backends)
    return {
        "loadbalancer_id": _name(builder.lb.id),
        "description": builder.lb.name,
        "global": {
            "stats_socket": ctx.stats_socket,
            "server_state_file": ctx.server_state_file,
            "hard_stop_after": f"{ctx.hard_stop_after_s}s",
            "maxconn": min(wanted, ctx.maxconn_cap) if frontend_views else ctx.maxconn_cap,
            "nbthread": ctx.threads,
            "external_check": ping,
            "local_peer": ctx.local_peer,
        },
        "logs": _log_view(ctx),
        "peers": builder.peers(),
        "frontends": frontend_views,
        "backends": backends,
    }
