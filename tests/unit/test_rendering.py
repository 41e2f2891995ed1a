"""Golden-file tests of the HAProxy renderer, plus the escaping and edge-case contracts.

Each example builds a LoadBalancerState and compares its rendering with
``golden/<example>.cfg``. ``FULCRUM_UPDATE_GOLDEN=1`` rewrites the golden files instead.
tests/integration/test_rendering_haproxy_check.py runs `haproxy -c` on every golden file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any, Final

import pytest
from pydantic import ValidationError

from libs.common.domain.model import (
    AdditionalVip,
    HealthMonitor,
    L7Policy,
    L7Rule,
    Listener,
    LoadBalancer,
    LoadBalancerState,
    Member,
    Pool,
    ProvisioningStatus,
    SessionPersistence,
    Topology,
)
from services.provisioner.rendering import (
    ListenerTlsFiles,
    Peer,
    PoolTlsFiles,
    RenderContext,
    RenderError,
    build_view_model,
    haproxy_escape,
    maxconn_cap_for_fd_limit,
    render_haproxy,
)
from services.provisioner.rendering._escaping import logformat_escape, sample_arg

GOLDEN_DIR: Final = Path(__file__).parent / "golden"
# Golden contexts put every amphora file under this directory; the haproxy -c test swaps it
# for a temporary directory holding real files.
GOLDEN_STATE_DIR: Final = "/run/fulcrum-golden"
UPDATE_ENV: Final = "FULCRUM_UPDATE_GOLDEN"
PROJECT: Final = "0a0a0a0a0a0a4a0a8a0a0a0a0a0a0a0a"
T0: Final = datetime(2024, 1, 1, tzinfo=UTC)

# Hostile text: every character HAProxy's config parser treats specially.
HOSTILE: Final = "a b\t\"q\" 's' $HOME #c \\x\nX-Injected: 1\r"


def _uid(kind: int, number: int) -> str:
    return f"{kind:08x}-0000-4000-8000-{number:012x}"


class StateBuilder:
    """Builds a LoadBalancerState from readable calls; ids are stable per kind and order.

    Every resource is ACTIVE unless given ``provisioning_status``; ``created_at`` grows with
    each call so orderings that use it are deterministic.
    """

    def __init__(
        self,
        vip: str = "203.0.113.10",
        *,
        topology: Topology = Topology.SINGLE,
        **lb_fields: Any,
    ) -> None:
        self._clock = count()
        self._numbers: dict[int, count[int]] = {}
        self.lb = LoadBalancer(
            **{**self._common(1, "lb"), **lb_fields},
            vip_address=vip,
            vip_port_id=_uid(9, 1),
            vip_subnet_id=_uid(9, 2),
            vip_network_id=_uid(9, 3),
            topology=topology,
        )
        self.listeners: dict[str, Listener] = {}
        self.pools: dict[str, Pool] = {}
        self.members: dict[str, Member] = {}
        self.monitors: dict[str, HealthMonitor] = {}
        self.policies: dict[str, L7Policy] = {}
        self.rules: dict[str, L7Rule] = {}

    def _common(self, kind: int, name: str) -> dict[str, Any]:
        number = next(self._numbers.setdefault(kind, count(1)))
        return {
            "id": _uid(kind, number),
            "project_id": PROJECT,
            "name": name,
            "provisioning_status": ProvisioningStatus.ACTIVE,
            "created_at": T0 + timedelta(seconds=next(self._clock)),
        }

    def _fields(self, kind: int, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        return {**self._common(kind, name), **fields}

    def listener(self, protocol: str, port: int, name: str = "", **fields: Any) -> str:
        item = Listener(
            **self._fields(2, name, fields),
            loadbalancer_id=self.lb.id,
            protocol=protocol,
            protocol_port=port,
        )
        self.listeners[item.id] = item
        return item.id

    def pool(
        self,
        protocol: str,
        algorithm: str = "ROUND_ROBIN",
        *,
        listener: str | None = None,
        name: str = "",
        **fields: Any,
    ) -> str:
        """A pool; ``listener`` makes it that listener's default pool."""
        item = Pool(
            **self._fields(3, name, fields),
            loadbalancer_id=self.lb.id,
            protocol=protocol,
            lb_algorithm=algorithm,
        )
        self.pools[item.id] = item
        if listener is not None:
            self.listeners[listener] = self.listeners[listener].model_copy(
                update={"default_pool_id": item.id}
            )
        return item.id

    def member(self, pool: str, address: str, port: int, name: str = "", **fields: Any) -> str:
        item = Member(
            **self._fields(4, name, fields), pool_id=pool, address=address, protocol_port=port
        )
        self.members[item.id] = item
        return item.id

    def monitor(
        self,
        pool: str,
        type_: str,
        *,
        delay: int = 5,
        timeout: int = 3,
        max_retries: int = 3,
        **fields: Any,
    ) -> str:
        item = HealthMonitor(
            **self._fields(5, "", fields),
            pool_id=pool,
            type=type_,
            delay=delay,
            timeout=timeout,
            max_retries=max_retries,
        )
        self.monitors[item.id] = item
        return item.id

    def policy(self, listener: str, action: str, position: int, **fields: Any) -> str:
        item = L7Policy(
            **self._fields(6, "", fields), listener_id=listener, action=action, position=position
        )
        self.policies[item.id] = item
        return item.id

    def rule(self, policy: str, type_: str, compare_type: str, value: str, **fields: Any) -> str:
        item = L7Rule(
            **self._fields(7, "", fields),
            l7policy_id=policy,
            type=type_,
            compare_type=compare_type,
            value=value,
        )
        self.rules[item.id] = item
        return item.id

    def build(self) -> LoadBalancerState:
        return LoadBalancerState(
            version=1,
            loadbalancer=self.lb,
            listeners=self.listeners,
            pools=self.pools,
            members=self.members,
            healthmonitors=self.monitors,
            l7policies=self.policies,
            l7rules=self.rules,
        )


def golden_ctx(**fields: Any) -> RenderContext:
    """The amphora context of every golden example (maxconn cap as for a 20000 fd limit)."""
    defaults: dict[str, Any] = {
        "stats_socket": f"{GOLDEN_STATE_DIR}/stats.sock",
        "state_dir": GOLDEN_STATE_DIR,
        "maxconn_cap": maxconn_cap_for_fd_limit(20000),
        "external_check_command": f"{GOLDEN_STATE_DIR}/ping-check.sh",
        "threads": 1,  # the provisioner's default (haproxy_threads)
    }
    return RenderContext(**{**defaults, **fields})


# Files the TLS examples name; the haproxy -c test creates them under its state dir.
CERTS: Final = f"{GOLDEN_STATE_DIR}/certs"
LISTENER_CRT_LIST: Final = f"{CERTS}/listener.crtlist"
LISTENER_CLIENT_CA: Final = f"{CERTS}/client-ca.pem"
LISTENER_CLIENT_CRL: Final = f"{CERTS}/client-ca.crl"
POOL_CLIENT_CERT: Final = f"{CERTS}/pool-client.pem"
POOL_CA: Final = f"{CERTS}/member-ca.pem"
POOL_CRL: Final = f"{CERTS}/member-ca.crl"


# -- examples ---------------------------------------------------------------------------------


def example_http_basic() -> tuple[LoadBalancerState, RenderContext]:
    """The spec's example: HTTP listener, round robin, HTTP monitor, forwarded headers."""
    b = StateBuilder()
    listener = b.listener(
        "HTTP",
        80,
        name="web",
        insert_headers={
            "X-Forwarded-For": "true",
            "X-Forwarded-Port": "True",
            "X-Forwarded-Proto": "TRUE",
            "X-Real-IP": "false",
        },
    )
    pool = b.pool("HTTP", "ROUND_ROBIN", listener=listener, name="web-pool")
    b.monitor(pool, "HTTP", http_method="GET", url_path="/healthz", expected_codes="200")
    b.member(pool, "192.0.2.11", 8080)
    b.member(pool, "192.0.2.12", 8080)
    return b.build(), golden_ctx()


def example_tcp_algorithms() -> tuple[LoadBalancerState, RenderContext]:
    """TCP and HTTPS-passthrough listeners with every balance algorithm and L4 monitors."""
    b = StateBuilder()
    tcp = b.listener("TCP", 3306, name="db")
    least = b.pool("TCP", "LEAST_CONNECTIONS", listener=tcp)
    b.monitor(least, "TCP", delay=10, timeout=5, max_retries=2, max_retries_down=4)
    b.member(least, "192.0.2.21", 3306)
    b.member(least, "192.0.2.22", 3306)

    sticky = b.listener("TCP", 5432)
    source = b.pool(
        "TCP",
        "SOURCE_IP",
        listener=sticky,
        session_persistence=SessionPersistence(type="SOURCE_IP"),
    )
    b.member(source, "192.0.2.31", 5432)

    passthrough = b.listener("HTTPS", 443, name="tls-passthrough")
    hashed = b.pool("HTTPS", "SOURCE_IP_PORT", listener=passthrough)
    b.monitor(hashed, "TLS-HELLO")
    b.member(hashed, "192.0.2.41", 443)
    b.member(hashed, "2001:db8::42", 443)

    upgrade = b.listener("TCP", 8080, name="tcp-to-http")
    http_pool = b.pool("HTTP", "ROUND_ROBIN", listener=upgrade)
    b.member(http_pool, "192.0.2.51", 80)
    return b.build(), golden_ctx()


def example_proxy_protocol() -> tuple[LoadBalancerState, RenderContext]:
    """PROXY and PROXYV2 pools behind HTTP and TCP listeners, with a PING monitor."""
    b = StateBuilder()
    http = b.listener("HTTP", 80)
    proxy = b.pool("PROXY", "ROUND_ROBIN", listener=http)
    b.monitor(proxy, "PING", delay=2, timeout=1, max_retries=1, max_retries_down=2)
    b.member(proxy, "192.0.2.61", 8080)
    tcp = b.listener("TCP", 9000)
    proxy_v2 = b.pool("PROXYV2", "LEAST_CONNECTIONS", listener=tcp)
    b.monitor(proxy_v2, "TCP")
    b.member(proxy_v2, "192.0.2.62", 9000)
    return b.build(), golden_ctx()


def example_members() -> tuple[LoadBalancerState, RenderContext]:
    """Member options: weight, backup, drain, monitor address/port, admin-down, deleting."""
    b = StateBuilder()
    listener = b.listener("HTTP", 80)
    pool = b.pool("HTTP", listener=listener)
    b.monitor(pool, "HTTP", url_path="/", delay=0, timeout=0)
    b.member(pool, "192.0.2.71", 80, weight=10)
    b.member(pool, "192.0.2.72", 80, weight=0, name="draining")
    b.member(pool, "192.0.2.73", 80, backup=True)
    b.member(pool, "192.0.2.74", 80, monitor_address="198.51.100.74", monitor_port=8081)
    b.member(pool, "2001:db8::75", 80, monitor_address="2001:db8::76")
    b.member(pool, "192.0.2.77", 80, admin_state_up=False)
    b.member(pool, "192.0.2.78", 80, provisioning_status=ProvisioningStatus.PENDING_DELETE)
    b.member(pool, "192.0.2.79", 80, provisioning_status=ProvisioningStatus.PENDING_CREATE)
    return b.build(), golden_ctx()


def example_health_monitors() -> tuple[LoadBalancerState, RenderContext]:
    """HTTP/1.1 monitor with Host, code lists and ranges; HTTPS monitor; disabled monitor."""
    b = StateBuilder()
    listener = b.listener("HTTP", 80)
    http11 = b.pool("HTTP", listener=listener)
    b.monitor(
        http11,
        "HTTP",
        http_method="HEAD",
        url_path="/status?full=1",
        http_version=1.1,
        domain_name="app.example.com",
        expected_codes="200-204,301,302",
        delay=7,
        timeout=4,
        max_retries=5,
        max_retries_down=6,
    )
    b.member(http11, "192.0.2.81", 80)

    tcp = b.listener("TCP", 443)
    https = b.pool("HTTPS", listener=tcp)
    b.monitor(https, "HTTPS", url_path="/health", http_version=1.0, expected_codes="200")
    b.member(https, "192.0.2.82", 443)

    other = b.listener("TCP", 444)
    unmonitored = b.pool("TCP", listener=other)
    b.monitor(unmonitored, "TCP", admin_state_up=False)
    b.member(unmonitored, "192.0.2.83", 443)
    return b.build(), golden_ctx()


def example_persistence() -> tuple[LoadBalancerState, RenderContext]:
    """HTTP_COOKIE and APP_COOKIE persistence (SOURCE_IP is in tcp_algorithms)."""
    b = StateBuilder()
    web = b.listener("HTTP", 80)
    inserted = b.pool(
        "HTTP", listener=web, session_persistence=SessionPersistence(type="HTTP_COOKIE")
    )
    b.member(inserted, "192.0.2.91", 80)
    b.member(inserted, "192.0.2.92", 80)
    app = b.listener("HTTP", 8080)
    learned = b.pool(
        "HTTP",
        "LEAST_CONNECTIONS",
        listener=app,
        session_persistence=SessionPersistence(type="APP_COOKIE", cookie_name="JSESSIONID"),
    )
    b.member(learned, "192.0.2.93", 8080)
    return b.build(), golden_ctx()


def example_l7() -> tuple[LoadBalancerState, RenderContext]:
    """Every L7 action, rule type and compare type; invert; position order; disabled parts."""
    b = StateBuilder()
    listener = b.listener("HTTP", 80)
    default = b.pool("HTTP", listener=listener, name="default")
    b.member(default, "192.0.2.101", 80)
    api = b.pool("HTTP", name="api")
    b.member(api, "192.0.2.102", 80)
    static = b.pool("PROXY", name="static")
    b.member(static, "192.0.2.103", 80)

    # Created out of position order: rendering must follow position.
    to_static = b.policy(listener, "REDIRECT_TO_POOL", 3, redirect_pool_id=static)
    b.rule(to_static, "FILE_TYPE", "EQUAL_TO", "png")
    b.rule(to_static, "PATH", "EQUAL_TO", "/disabled-rule", admin_state_up=False)

    reject = b.policy(listener, "REJECT", 1)
    b.rule(reject, "HEADER", "CONTAINS", "sqlmap", key="User-Agent")
    b.rule(reject, "PATH", "STARTS_WITH", "/admin", invert=True)

    to_api = b.policy(listener, "REDIRECT_TO_POOL", 2, redirect_pool_id=api)
    b.rule(to_api, "HOST_NAME", "ENDS_WITH", ".api.example.com")
    b.rule(to_api, "PATH", "REGEX", r"^/v[0-9]+/")
    b.rule(to_api, "COOKIE", "EQUAL_TO", "beta", key="channel")

    moved = b.policy(
        listener,
        "REDIRECT_TO_URL",
        4,
        redirect_url="https://www.example.com/moved?from=old%20site",
        redirect_http_code=301,
    )
    b.rule(moved, "HOST_NAME", "EQUAL_TO", "old.example.com")

    prefixed = b.policy(listener, "REDIRECT_PREFIX", 5, redirect_prefix="https://new.example.com")
    b.rule(prefixed, "PATH", "CONTAINS", "/legacy/")
    b.rule(prefixed, "SSL_CONN_HAS_CERT", "EQUAL_TO", "true")
    b.rule(prefixed, "SSL_VERIFY_RESULT", "EQUAL_TO", "0")
    b.rule(prefixed, "SSL_DN_FIELD", "STARTS_WITH", "ops-", key="CN")

    scripts = b.policy(listener, "REJECT", 6)
    b.rule(scripts, "FILE_TYPE", "REGEX", r"\.(php|asp)$")

    disabled = b.policy(listener, "REJECT", 9, admin_state_up=False)
    b.rule(disabled, "PATH", "EQUAL_TO", "/never")
    b.policy(listener, "REJECT", 7)  # no rules: not rendered
    deleting = b.policy(listener, "REJECT", 10, provisioning_status="PENDING_DELETE")
    b.rule(deleting, "PATH", "EQUAL_TO", "/gone")
    return b.build(), golden_ctx()


def example_limits() -> tuple[LoadBalancerState, RenderContext]:
    """Connection limits (explicit, default, above the cap), timeouts and allowed CIDRs."""
    b = StateBuilder()
    limited = b.listener(
        "HTTP",
        80,
        connection_limit=1000,
        timeout_client_data=20000,
        timeout_member_connect=3000,
        timeout_member_data=40000,
        allowed_cidrs=("192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32", "198.18.7.1/15"),
    )
    pool = b.pool("HTTP", listener=limited)
    b.member(pool, "192.0.2.111", 80)
    unlimited = b.listener("TCP", 81, connection_limit=-1, timeout_tcp_inspect=1500)
    pool2 = b.pool("TCP", listener=unlimited)
    b.member(pool2, "192.0.2.112", 80)
    huge = b.listener("TCP", 82, connection_limit=1_000_000, allowed_cidrs=())
    pool3 = b.pool("TCP", listener=huge)
    b.member(pool3, "192.0.2.113", 80)
    return b.build(), golden_ctx()


def example_admin_down() -> tuple[LoadBalancerState, RenderContext]:
    """Admin-down listener (absent), pool (servers disabled); PENDING_DELETE resources."""
    b = StateBuilder()
    off = b.listener("HTTP", 80, admin_state_up=False)
    off_pool = b.pool("HTTP", listener=off)
    b.member(off_pool, "192.0.2.121", 80)
    on = b.listener("HTTP", 81)
    down_pool = b.pool("HTTP", listener=on, admin_state_up=False)
    b.monitor(down_pool, "HTTP")
    b.member(down_pool, "192.0.2.122", 80)
    b.member(down_pool, "192.0.2.123", 80)
    going = b.listener("HTTP", 82, provisioning_status="PENDING_DELETE")
    going_pool = b.pool("HTTP", listener=going)
    b.member(going_pool, "192.0.2.124", 80)
    orphan = b.listener("HTTP", 83)
    deleted_pool = b.pool("HTTP", listener=orphan, provisioning_status="PENDING_DELETE")
    b.member(deleted_pool, "192.0.2.125", 80)
    b.listener("UDP", 53)
    return b.build(), golden_ctx()


def example_terminated_https() -> tuple[LoadBalancerState, RenderContext]:
    """TLS termination with mTLS, versions, ciphers, ALPN, HSTS, client-cert headers; a
    pool that re-encrypts with a CA, and one without (verify none)."""
    b = StateBuilder()
    listener = b.listener(
        "TERMINATED_HTTPS",
        443,
        default_tls_container_ref="https://barbican/containers/1",
        client_ca_tls_container_ref="https://barbican/containers/2",
        client_authentication="OPTIONAL",
        tls_ciphers="ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384",
        tls_versions=("TLSv1.2", "TLSv1.3"),
        alpn_protocols=("h2", "http/1.1"),
        hsts_max_age=31536000,
        hsts_include_subdomains=True,
        hsts_preload=True,
        insert_headers={
            "X-Forwarded-For": "true",
            "X-Forwarded-Proto": "true",
            "X-SSL-Client-Verify": "true",
            "X-SSL-Client-DN": "true",
            "X-SSL-Client-CN": "true",
        },
    )
    reencrypt = b.pool(
        "HTTP",
        listener=listener,
        tls_enabled=True,
        tls_versions=("TLSv1.3",),
        alpn_protocols=("http/1.1",),
    )
    b.monitor(reencrypt, "HTTP", url_path="/health")
    b.member(reencrypt, "192.0.2.131", 8443)
    b.member(reencrypt, "192.0.2.132", 8443, monitor_port=8444)
    insecure = b.pool("HTTP", tls_enabled=True)
    b.member(insecure, "192.0.2.133", 8443)
    to_insecure = b.policy(listener, "REDIRECT_TO_POOL", 1, redirect_pool_id=insecure)
    b.rule(to_insecure, "PATH", "STARTS_WITH", "/legacy")
    # Without certificate files from the amphora a TERMINATED_HTTPS listener is not served.
    b.listener("TERMINATED_HTTPS", 8443)
    state = b.build()
    ctx = golden_ctx(
        listener_tls={
            listener: ListenerTlsFiles(
                crt_list=LISTENER_CRT_LIST,
                client_ca=LISTENER_CLIENT_CA,
                client_crl=LISTENER_CLIENT_CRL,
            )
        },
        pool_tls={reencrypt: PoolTlsFiles(client_cert=POOL_CLIENT_CERT, ca=POOL_CA, crl=POOL_CRL)},
    )
    return state, ctx


def example_active_standby() -> tuple[LoadBalancerState, RenderContext]:
    """Peers for stick-table sync between the two amphorae of an ACTIVE_STANDBY pair."""
    b = StateBuilder(topology=Topology.ACTIVE_STANDBY)
    listener = b.listener("TCP", 22)
    pool = b.pool(
        "TCP",
        "SOURCE_IP",
        listener=listener,
        session_persistence=SessionPersistence(type="SOURCE_IP"),
    )
    b.member(pool, "192.0.2.141", 22)
    web = b.listener("HTTP", 80)
    app = b.pool(
        "HTTP",
        listener=web,
        session_persistence=SessionPersistence(type="APP_COOKIE", cookie_name="sid"),
    )
    b.member(app, "192.0.2.142", 80)
    ctx = golden_ctx(
        peers=(
            Peer(name="amphora-a", address="198.18.0.11", port=1025),
            Peer(name="amphora-b", address="198.18.0.12", port=1025),
        ),
        local_peer="amphora-a",
    )
    return b.build(), ctx


def example_hostile_strings() -> tuple[LoadBalancerState, RenderContext]:
    """User strings full of parser metacharacters, in every place one can reach the config."""
    b = StateBuilder(name=HOSTILE)
    listener = b.listener("HTTP", 80, name=HOSTILE)
    pool = b.pool(
        "HTTP",
        listener=listener,
        name=HOSTILE,
        session_persistence=SessionPersistence(type="APP_COOKIE", cookie_name='c"o,o)k\\ie'),
    )
    b.monitor(
        pool,
        "HTTP",
        http_method="GET",
        url_path='/he alth?x="1"&y=$PATH#frag%41',
        http_version=1.1,
        domain_name="h%ost #1",
    )
    b.member(pool, "192.0.2.151", 80)
    policy = b.policy(listener, "REDIRECT_TO_URL", 1, redirect_url='https://x.example/%41 "q"#f')
    b.rule(policy, "HEADER", "EQUAL_TO", HOSTILE, key="X-We'ird")
    b.rule(policy, "COOKIE", "REGEX", r'^a\d+ "b"$', key="k)e,y")
    b.rule(policy, "PATH", "STARTS_WITH", "-m str")
    b.rule(policy, "SSL_DN_FIELD", "EQUAL_TO", "", key="O")
    prefix = b.policy(listener, "REDIRECT_PREFIX", 2, redirect_prefix="/p%25 ${X}")
    b.rule(prefix, "HOST_NAME", "CONTAINS", "#")
    return b.build(), golden_ctx()


def example_prometheus() -> tuple[LoadBalancerState, RenderContext]:
    """A PROMETHEUS listener serves HAProxy's own exporter."""
    b = StateBuilder()
    b.listener("PROMETHEUS", 9100, allowed_cidrs=("198.18.0.0/15",))
    return b.build(), golden_ctx()


def example_empty() -> tuple[LoadBalancerState, RenderContext]:
    """A load balancer without listeners: global and defaults only."""
    return StateBuilder().build(), golden_ctx()


def example_additional_vips() -> tuple[LoadBalancerState, RenderContext]:
    """A dual-stack LB: IPv6 primary VIP, IPv4 and IPv6 additional VIPs, members of both
    families; every listener binds every VIP."""
    extra = (
        AdditionalVip(subnet_id=_uid(9, 4), ip_address="203.0.113.11"),
        AdditionalVip(subnet_id=_uid(9, 5), ip_address="2001:db8:1::11"),
    )
    b = StateBuilder("2001:db8::10", additional_vips=extra)
    web = b.listener("HTTP", 80)
    pool = b.pool("HTTP", listener=web)
    b.member(pool, "2001:db8::21", 8080)
    b.member(pool, "192.0.2.22", 8080)
    tcp = b.listener("TCP", 5432)
    b.member(b.pool("TCP", listener=tcp), "2001:db8::23", 5432)
    return b.build(), golden_ctx()


EXAMPLES: Final[dict[str, Callable[[], tuple[LoadBalancerState, RenderContext]]]] = {
    "http_basic": example_http_basic,
    "tcp_algorithms": example_tcp_algorithms,
    "proxy_protocol": example_proxy_protocol,
    "members": example_members,
    "health_monitors": example_health_monitors,
    "persistence": example_persistence,
    "l7": example_l7,
    "limits": example_limits,
    "admin_down": example_admin_down,
    "terminated_https": example_terminated_https,
    "active_standby": example_active_standby,
    "hostile_strings": example_hostile_strings,
    "prometheus": example_prometheus,
    "empty": example_empty,
    "additional_vips": example_additional_vips,
}


def golden_path(example: str) -> Path:
    return GOLDEN_DIR / f"{example}.cfg"


# -- golden files -----------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_rendering_matches_golden_file(example: str) -> None:
    state, ctx = EXAMPLES[example]()
    rendered = render_haproxy(state, ctx)
    path = golden_path(example)
    if os.environ.get(UPDATE_ENV) == "1":
        path.write_text(rendered)
    assert path.exists(), f"no golden file {path}; run with {UPDATE_ENV}=1"
    assert rendered == path.read_text()


def test_every_golden_file_has_an_example() -> None:
    assert {p.stem for p in GOLDEN_DIR.glob("*.cfg")} == set(EXAMPLES)


def test_rendering_is_deterministic() -> None:
    for build in EXAMPLES.values():
        state, ctx = build()
        assert render_haproxy(state, ctx) == render_haproxy(state, ctx)


# -- escaping ---------------------------------------------------------------------------------


def test_plain_words_are_not_quoted() -> None:
    for word in ["abc", "/var/run/x.sock", "192.0.2.1:80", "a-b_c.d", "h2,http/1.1", "50%"]:
        assert haproxy_escape(word) == word


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("", '""'),
        ("a b", '"a b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("$HOME", '"\\$HOME"'),
        ("#comment", '"\\#comment"'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak\r", '"line\\x0abreak\\x0d"'),
        ("tab\there", '"tab\\x09here"'),
        ("nul\x00", '"nul\\x00"'),
        ("it's", '"it\'s"'),
    ],
)
def test_haproxy_escape(raw: str, escaped: str) -> None:
    assert haproxy_escape(raw) == escaped


def test_logformat_and_sample_argument_escapes() -> None:
    assert logformat_escape("100%25") == "100%%25"
    assert sample_arg("X-Forwarded-For") == "X-Forwarded-For"
    assert sample_arg('a,b)"c\\') == '"a,b)\\"c\\\\"'


def test_hostile_strings_never_break_a_line() -> None:
    state, ctx = example_hostile_strings()
    rendered = render_haproxy(state, ctx)
    assert "X-Injected" in rendered  # the text is there, but inside a quoted word
    for line in rendered.splitlines():
        assert not line.startswith("X-Injected")
        assert "\n" not in line and "\r" not in line
    assert "\r" not in rendered
    # Every line is either blank, a comment, a section header or an indented directive.
    sections = ("global", "defaults", "frontend ", "backend ", "peers ", "#")
    for line in rendered.splitlines():
        assert line == "" or line.startswith("    ") or line.startswith(sections), line


# -- behaviour ----------------------------------------------------------------------------------


def test_pending_delete_and_admin_down() -> None:
    state, ctx = example_admin_down()
    view = build_view_model(state, ctx)
    ports = [f["binds"][0]["port"] for f in view["frontends"]]
    assert ports == [81, 83]  # admin-down 80, deleting 82 and UDP 53 are not rendered
    orphan = view["frontends"][1]
    assert orphan["default_backend"] is None  # its pool is being deleted
    (backend,) = view["backends"]
    assert [opt for s in backend["servers"] for opt in s["options"] if opt[0] == "disabled"]
    assert all(("disabled", None) in s["options"] for s in backend["servers"])


def test_members_skip_pending_delete_and_disable_admin_down() -> None:
    state, ctx = example_members()
    (backend,) = build_view_model(state, ctx)["backends"]
    addresses = [s["address"] for s in backend["servers"]]
    assert "192.0.2.78" not in addresses
    assert "[2001:db8::75]" in addresses
    disabled = [s["address"] for s in backend["servers"] if ("disabled", None) in s["options"]]
    assert disabled == ["192.0.2.77"]


def test_policies_follow_position_and_first_match_wins() -> None:
    state, ctx = example_l7()
    (frontend,) = build_view_model(state, ctx)["frontends"]
    kinds = [p["kind"] for p in frontend["policies"]]
    assert kinds == ["deny", "use_backend", "use_backend", "location", "prefix", "deny"]
    rendered = render_haproxy(state, ctx)
    selections = [line for line in rendered.splitlines() if "set-var(txn.fulcrum_l7policy)" in line]
    assert len(selections) == 6
    assert all("!{ var(txn.fulcrum_l7policy) -m found }" in line for line in selections)


def test_maxconn_is_capped_and_summed() -> None:
    state, ctx = example_limits()
    view = build_view_model(state, ctx)
    assert [f["maxconn"] for f in view["frontends"]] == [1000, 9500, 9500]
    assert view["global"]["maxconn"] == 9500
    b = StateBuilder()
    b.listener("HTTP", 80, connection_limit=100)
    b.listener("TCP", 81, connection_limit=200)
    b.listener("TCP", 82, connection_limit=300, admin_state_up=False)
    assert build_view_model(b.build(), ctx)["global"]["maxconn"] == 300


def test_haproxy_runs_the_threads_asked_or_its_own_default() -> None:
    state, _ = example_limits()
    assert "\n    nbthread 1\n" in render_haproxy(state, golden_ctx())
    assert "\n    nbthread 4\n" in render_haproxy(state, golden_ctx(threads=4))
    assert "nbthread" not in render_haproxy(state, golden_ctx(threads=None))


def test_maxconn_cap_for_fd_limit() -> None:
    assert maxconn_cap_for_fd_limit(20000) == 9500
    assert maxconn_cap_for_fd_limit(1024) == 461
    assert maxconn_cap_for_fd_limit(1) == 1


def test_ping_monitor_needs_an_external_check_command() -> None:
    state, _ = example_proxy_protocol()
    with pytest.raises(RenderError, match="cannot ping"):
        render_haproxy(state, golden_ctx(external_check_command=None))


def test_state_without_loadbalancer_is_refused() -> None:
    with pytest.raises(RenderError):
        render_haproxy(LoadBalancerState(), golden_ctx())


def test_invalid_expected_codes_are_refused() -> None:
    b = StateBuilder()
    pool = b.pool("HTTP", listener=b.listener("HTTP", 80))
    b.monitor(pool, "HTTP", expected_codes="2xx")
    with pytest.raises(RenderError, match="expected_codes"):
        render_haproxy(b.build(), golden_ctx())


def test_incompatible_pool_protocol_is_refused() -> None:
    b = StateBuilder()
    b.pool("HTTPS", listener=b.listener("HTTP", 80))
    with pytest.raises(RenderError, match="cannot serve"):
        render_haproxy(b.build(), golden_ctx())


def test_bind_address_override() -> None:
    state, _ = example_http_basic()
    rendered = render_haproxy(state, golden_ctx(bind_address="127.0.0.9"))
    assert "    bind 127.0.0.9:80\n" in rendered
    assert "203.0.113.10" not in rendered


def test_context_validates_peers() -> None:
    peer = Peer(name="a", address="198.18.0.1", port=1025)
    with pytest.raises(ValidationError):
        golden_ctx(peers=(peer,), local_peer="b")
    with pytest.raises(ValidationError):
        golden_ctx(local_peer="a")
    with pytest.raises(ValidationError):
        Peer(name="bad name", address="198.18.0.1", port=1025)
