"""Cross-field rules on whole resources, checked on POST and on the merged result of a PUT.

Pure. Field-level rules (types, ranges, formats) live in the HTTP schemas; rules that need
the rest of the tree (duplicates, protocol compatibility, the PENDING lock) live in ``decide``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from typing import Any, Final

from libs.common.domain.model import (
    HealthMonitor,
    HealthMonitorType,
    L7CompareType,
    L7Rule,
    L7RuleType,
    Listener,
    ListenerProtocol,
    LoadBalancer,
    Member,
    Pool,
    SessionPersistenceType,
)
from libs.common.errors import NotImplementedByProvider, ValidationFailed

LP = ListenerProtocol
# Layer-4 protocols the kernel data plane serves (nftables), not HAProxy.
KERNEL_PROTOCOLS: Final = frozenset({"UDP", "SCTP"})
# Octavia's [api_settings] udp_connect_min_interval_health_monitor.
UDP_CONNECT_MIN_DELAY: Final = 3
# Health monitor types a pool takes, by pool protocol (Octavia's amphora rules).
_KERNEL_POOL_MONITORS: Final = frozenset({"UDP-CONNECT", "SCTP", "TCP", "HTTP"})
_KERNEL_ONLY_MONITORS: Final = frozenset({"UDP-CONNECT", "SCTP"})
_UDP_PERSISTENCE_FIELDS: Final = ("type", "persistence_timeout", "persistence_granularity")
HTTP_MONITORS: Final = frozenset({HealthMonitorType.HTTP, HealthMonitorType.HTTPS})
HTTP_MONITOR_DEFAULTS: Final[dict[str, Any]] = {
    "http_method": "GET",
    "url_path": "/",
    "expected_codes": "200",
}
DEFAULT_TLS_VERSIONS: Final = ("TLSv1.2", "TLSv1.3")
DEFAULT_ALPN_PROTOCOLS: Final = ("h2", "http/1.1", "http/1.0")
DEFAULT_TLS_CIPHERS: Final = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
)
INSERT_HEADERS: Final = frozenset(
    {
        "X-Forwarded-For",
        "X-Forwarded-Port",
        "X-Forwarded-Proto",
        "X-Forwarded-IP",
        "X-Client-IP",
        "X-Real-IP",
    }
)
SSL_INSERT_HEADERS: Final = frozenset(
    {
        "X-SSL-Client-Verify",
        "X-SSL-Client-Has-Cert",
        "X-SSL-Client-DN",
        "X-SSL-Client-CN",
        "X-SSL-Issuer",
        "X-SSL-Client-SHA1",
        "X-SSL-Client-Not-Before",
        "X-SSL-Client-Not-After",
    }
)
_TLS_ONLY_FIELDS: Final = (
    "default_tls_container_ref",
    "sni_container_refs",
    "client_ca_tls_container_ref",
    "client_crl_container_ref",
    "tls_ciphers",
    "tls_versions",
    "alpn_protocols",
    "hsts_max_age",
)
_TOKEN: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_COOKIE_VALUE: Final = re.compile(r"^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+$")
_HEADER_VALUE: Final = re.compile(r"^[^\x00-\x1f\x7f]+$")
_DN_FIELD: Final = re.compile(r"^[a-zA-Z][A-Za-z0-9-]*$")
_NO_SPACE: Final = re.compile(r"^\S+$")


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(f"Validation failure: {message}")


def unsupported(option: str) -> NotImplementedByProvider:
    """Octavia's ProviderUnsupportedOptionError (501) for the amphora provider."""
    return NotImplementedByProvider(
        f"Provider 'amphora' does not support a requested option: {option}"
    )


def check_servable(protocol: str, udp_dataplane: bool) -> None:
    """The provider's refusal (501) of a protocol this deployment cannot serve; called after
    every other check, as Octavia calls its provider last. SCTP: the kernel has no SCTP.
    UDP: served by nftables in the amphora's own network namespace (netns, docker drivers)."""
    if protocol == "SCTP":
        raise unsupported("SCTP is not supported by this kernel")
    if protocol == "UDP" and not udp_dataplane:
        raise unsupported(
            "UDP needs amphorae with a network namespace of their own (the netns or docker "
            "driver); the configured amphora driver cannot serve UDP"
        )


SCTP_MONITOR_REFUSAL: Final = (
    "SCTP health monitors are not supported: SCTP is not supported by this kernel, so no "
    "member could answer the monitor's SCTP INIT"
)


def check_monitor_servable(monitor_type: str) -> None:
    """The provider's refusal (501, after every other check) of an SCTP monitor (Octavia's
    accepts one on a UDP or SCTP pool: its amphora probes members with an SCTP INIT)."""
    if monitor_type == "SCTP":
        raise unsupported(SCTP_MONITOR_REFUSAL)


def _check_kernel_listener(listener: Listener) -> None:
    """Octavia's UDP/SCTP listener rules: no insert-headers, no TLS."""
    protocol = listener.protocol.value
    if listener.insert_headers:
        raise ValidationFailed(
            f"insert-headers is not a valid option for a {protocol} protocol listener."
        )
    if listener.default_tls_container_ref or listener.sni_container_refs:
        raise _invalid(f"{protocol} protocol listener does not support TLS.")


def check_certificate_refs(protocol: str, fields: Mapping[str, Any]) -> None:
    """Certificate refs only on listeners that terminate TLS; checked before the refs are
    looked up (``protocol`` is the stored one on PUT). UDP and SCTP listeners have their own
    wording ("... listener does not support TLS."), so they are left to their rules. A
    PROMETHEUS listener that asks for TLS (any TLS option) without a default certificate
    gets Octavia's "PROMETHEUS with TLS" wording."""
    if (
        protocol == LP.PROMETHEUS.value
        and not fields.get("default_tls_container_ref")
        and (
            any(fields.get(name) for name in _TLS_ONLY_FIELDS)
            or fields.get("client_authentication") not in (None, "NONE")
        )
    ):
        raise _invalid(
            "An SNI or default certificate container reference must be provided for "
            "PROMETHEUS with TLS protocol listeners."
        )
    if protocol not in (LP.TERMINATED_HTTPS.value, "UDP", "SCTP") and (
        fields.get("default_tls_container_ref") or fields.get("sni_container_refs")
    ):
        raise _invalid(
            f"Certificate container references are not allowed on {protocol} protocol listeners."
        )


def check_listener(listener: Listener, lb: LoadBalancer, creating: bool = True) -> None:
    """Raise ValidationFailed unless the listener is coherent."""
    if listener.protocol.value in KERNEL_PROTOCOLS:
        _check_kernel_listener(listener)
    tls = listener.protocol is LP.TERMINATED_HTTPS
    if tls and not (listener.default_tls_container_ref or listener.sni_container_refs):
        raise _invalid(
            "An SNI or default certificate container reference must be provided for "
            "TERMINATED_HTTPS protocol listeners."
        )
    if not tls:
        check_certificate_refs(listener.protocol.value, listener.model_dump())
        for name in _TLS_ONLY_FIELDS:
            if getattr(listener, name):
                raise _invalid(f"{name} is only valid for TERMINATED_HTTPS listeners.")
        if listener.client_authentication != "NONE":
            raise _invalid("client_authentication is only valid for TERMINATED_HTTPS listeners.")
    if listener.client_crl_container_ref and not listener.client_ca_tls_container_ref:
        raise _invalid(
            "A client authentication CA reference is required to specify a client "
            "authentication revocation list."
        )
    if listener.client_authentication != "NONE" and not listener.client_ca_tls_container_ref:
        raise _invalid(
            f"Client authentication setting {listener.client_authentication} requires a "
            "client CA container reference."
        )
    if (listener.hsts_include_subdomains or listener.hsts_preload) and (
        listener.hsts_max_age is None
    ):
        raise _invalid("HSTS options require hsts_max_age to be set.")
    for name in ("tls_versions", "alpn_protocols"):
        if getattr(listener, name) == ():
            raise _invalid(f"{name} must not be an empty list.")
    _check_insert_headers(listener, creating)
    if listener.protocol is LP.PROMETHEUS and listener.default_pool_id is not None:
        raise _invalid("PROMETHEUS listeners cannot have a default pool.")
    _check_allowed_cidrs(listener, lb)


def _check_insert_headers(listener: Listener, creating: bool) -> None:
    if not listener.insert_headers:
        return
    protocol = listener.protocol.value
    if listener.protocol not in (LP.HTTP, LP.TERMINATED_HTTPS):
        raise ValidationFailed(
            f"insert-headers is not a valid option for a {protocol} protocol listener."
        )
    names = list(listener.insert_headers)
    unknown = [h for h in names if h not in INSERT_HEADERS | SSL_INSERT_HEADERS]
    if unknown:
        # Octavia prints the Python repr: dict_keys([...]) of the whole dict on POST.
        shown = f"dict_keys({names!r})" if creating else repr(names)
        raise ValidationFailed(f"{shown} is not a valid option for insert_headers")
    ssl = [h for h in names if h in SSL_INSERT_HEADERS]
    if ssl and listener.protocol is not LP.TERMINATED_HTTPS:
        raise ValidationFailed(f"{ssl!r} is not a valid option for {protocol} protocol listener.")


def _check_allowed_cidrs(listener: Listener, lb: LoadBalancer) -> None:
    """Each CIDR must be of the address family of some VIP of the LB."""
    if listener.allowed_cidrs and lb.vip_sg_ids:
        raise _invalid("Allowed CIDRs are not allowed when using custom VIP Security Groups.")
    vip_versions = {ipaddress.ip_address(vip).version for vip in lb.all_vips()}
    for cidr in listener.allowed_cidrs or ():
        if ipaddress.ip_network(cidr, strict=False).version not in vip_versions:
            raise _invalid(
                f"CIDR {cidr} IP version incompatible with VIP {lb.vip_address} IP version."
            )


def _check_kernel_pool(pool: Pool) -> None:
    """Octavia's session persistence rules for UDP/SCTP pools."""
    persistence = pool.session_persistence
    if persistence is None:
        return
    kind = persistence.type
    if kind is SessionPersistenceType.SOURCE_IP:
        if persistence.cookie_name is not None:
            raise _invalid(
                "session_persistence SOURCE_IP type for UDP and SCTP protocols only accepts: "
                f"{', '.join(_UDP_PERSISTENCE_FIELDS)}."
            )
    elif persistence.cookie_name:
        raise _invalid("Cookie names are not supported for UDP/SCTP pools.")
    else:
        raise _invalid(
            f"Session persistence of type {kind.value} is not supported for UDP/SCTP "
            "protocol pools."
        )
    granularity = persistence.persistence_granularity
    if granularity is not None:
        try:
            ipaddress.ip_address(granularity)
        except ValueError:
            raise ValidationFailed(
                "Invalid input for field/attribute persistence_granularity. Value: "
                f"'{granularity}'. Value should be IPv4 or IPv6 format"
            ) from None


def check_pool(pool: Pool) -> None:
    """Raise ValidationFailed unless the pool is coherent."""
    persistence = pool.session_persistence
    if pool.protocol.value in KERNEL_PROTOCOLS:
        _check_kernel_pool(pool)
        persistence = None
    if persistence is not None:
        app_cookie = persistence.type is SessionPersistenceType.APP_COOKIE
        if app_cookie and not persistence.cookie_name:
            raise _invalid(
                "Field cookie_name must be specified when using the APP_COOKIE session "
                "persistence type."
            )
        if not app_cookie and persistence.cookie_name:
            raise _invalid(
                "Field cookie_name can only be specified when using the APP_COOKIE session "
                "persistence type."
            )
        if persistence.cookie_name and not _TOKEN.match(persistence.cookie_name):
            raise _invalid(
                "cookie_name must not contain whitespace, control characters or "
                "separators such as ',', ';' or '\\'."
            )
        if (
            persistence.persistence_timeout is not None
            or persistence.persistence_granularity is not None
        ):
            raise _invalid(
                "persistence_timeout and persistence_granularity is only for UDP and SCTP "
                "protocol pools."
            )
    if pool.crl_container_ref and not pool.ca_tls_container_ref:
        raise _invalid(
            "A CA certificate reference is required to specify a certificate revocation list."
        )
    for name in ("tls_versions", "alpn_protocols"):
        if getattr(pool, name) == ():
            raise _invalid(f"{name} must not be an empty list.")


def check_member_family(member: Member, pool: Pool, lb: LoadBalancer, listened: bool) -> None:
    """Octavia's amphora refuses (501) UDP/SCTP members of an IP family no VIP of the LB has,
    on a pool that has listeners (``listened``)."""
    if pool.protocol.value not in KERNEL_PROTOCOLS or not listened:
        return
    vip_versions = {ipaddress.ip_address(vip).version for vip in lb.all_vips()}
    if ipaddress.ip_address(member.address).version not in vip_versions:
        raise unsupported(
            "This provider doesn't support mixing IPv4 and IPv6 addresses for its VIP and "
            "members in UDP load balancers."
        )


def check_member(
    member: Member, reserved_ips: Collection[str], subnet_ids: Collection[str]
) -> None:
    for address in (member.address, member.monitor_address):
        if address is not None and address in reserved_ips:
            shown = ipaddress.ip_address(address).exploded.upper()
            raise ValidationFailed(f"{shown} is not a valid option for member address")
    if member.subnet_id is not None and member.subnet_id not in subnet_ids:
        raise _invalid(f"Subnet {member.subnet_id} not found.")


def normalized_healthmonitor(hm: HealthMonitor) -> dict[str, Any]:
    """Fields an HTTP(S) monitor gets by default when they are unset."""
    if hm.type not in HTTP_MONITORS:
        return {}
    return {k: v for k, v in HTTP_MONITOR_DEFAULTS.items() if getattr(hm, k) is None}


def check_healthmonitor_type(hm: HealthMonitor, pool: Pool) -> None:
    """Octavia's health monitor types by pool protocol, and the UDP-CONNECT minimum delay."""
    kind, protocol = hm.type.value, pool.protocol.value
    if protocol in KERNEL_PROTOCOLS:
        if kind not in _KERNEL_POOL_MONITORS:
            raise _invalid(
                f"The associated pool protocol is {protocol}, so only a "
                "UDP-CONNECT/SCTP/TCP/HTTP health monitor is supported."
            )
    elif kind in _KERNEL_ONLY_MONITORS:
        raise _invalid(f"The {kind} type is only supported for pools of type UDP/SCTP.")
    if hm.type is HealthMonitorType.UDP_CONNECT and hm.delay < UDP_CONNECT_MIN_DELAY:
        raise _invalid(
            f"The request delay value {hm.delay} should be larger than "
            f"{UDP_CONNECT_MIN_DELAY} for UDP-CONNECT health monitor type."
        )


def check_healthmonitor(hm: HealthMonitor) -> None:
    if hm.type not in HTTP_MONITORS:
        for name in ("http_method", "url_path", "expected_codes", "http_version", "domain_name"):
            if getattr(hm, name) is not None:
                raise ValidationFailed(
                    f"{name} is not a valid option for health monitors of type {hm.type.value}"
                )
    if hm.domain_name is not None and hm.http_version != 1.1:
        raise _invalid("http_version 1.1 is required when domain_name is set.")


def _invalid_policy(message: str) -> ValidationFailed:
    return ValidationFailed(f"Invalid L7 Policy arguments: {message}")


def settle_l7policy(current: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """Octavia's L7 policy sanitizing of the fields a request gives (POST, or a PUT's fields;
    ``current`` is unused: Octavia looks at the request alone).

    1. A given action requires its target and nulls what it excludes (REJECT: url and pool;
       REDIRECT_TO_URL: pool; REDIRECT_TO_POOL: url). 2. A pool together with a url or a
       prefix is refused. 3-5. Whichever of pool, url, prefix is set (in that order) decides
       the action and nulls the others; url and prefix default ``redirect_http_code`` to 302.
    Returns the complete change."""
    del current
    changes = dict(given)
    if "action" in changes:
        action = changes["action"]
        if action == "REJECT":
            changes.update(redirect_url=None, redirect_pool_id=None)
        elif action == "REDIRECT_TO_URL":
            if not changes.get("redirect_url"):
                raise _invalid_policy("redirect_url must not be None")
            changes["redirect_pool_id"] = None
        elif action == "REDIRECT_TO_POOL":
            if not changes.get("redirect_pool_id"):
                raise _invalid_policy("redirect_pool_id or redirect_pool must not be None")
            changes["redirect_url"] = None
        elif action == "REDIRECT_PREFIX" and not changes.get("redirect_prefix"):
            raise _invalid_policy("redirect_prefix must not be None")
    if changes.get("redirect_pool_id") and (
        changes.get("redirect_url") or changes.get("redirect_prefix")
    ):
        raise _invalid_policy(
            "Cannot specify redirect_pool_id and redirect_url or redirect_prefix at the same time"
        )
    if changes.get("redirect_pool_id"):
        changes.update(
            action="REDIRECT_TO_POOL",
            redirect_url=None,
            redirect_prefix=None,
            redirect_http_code=None,
        )
    if changes.get("redirect_url"):
        changes.update(action="REDIRECT_TO_URL", redirect_pool_id=None, redirect_prefix=None)
        changes["redirect_http_code"] = changes.get("redirect_http_code") or 302
    if changes.get("redirect_prefix"):
        changes.update(action="REDIRECT_PREFIX", redirect_pool_id=None, redirect_url=None)
        changes["redirect_http_code"] = changes.get("redirect_http_code") or 302
    return changes


def _rule_error(message: str) -> ValidationFailed:
    """Octavia wraps every L7 rule error in L7RuleValidation."""
    return ValidationFailed(f"Error parsing L7Rule: {message}")


def _invalid_rule(message: str) -> ValidationFailed:
    return _rule_error(f"Invalid L7 Rule: {message}")


def _check_regex(value: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise _rule_error(f"Unable to parse regular expression: {exc}") from None


def _check_chars(value: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.match(value):
        raise _rule_error(f"Invalid characters in {what}")


_VALUE_COMPARES: Final = frozenset(
    {
        L7CompareType.STARTS_WITH,
        L7CompareType.ENDS_WITH,
        L7CompareType.CONTAINS,
        L7CompareType.EQUAL_TO,
    }
)


def check_l7rule(rule: L7Rule) -> None:
    """Octavia's l7rule_data checks, in its order; the first failure wins."""
    value, key, kind, compare = rule.value, rule.key, rule.type, rule.compare_type
    if not value:
        raise _invalid_rule("L7 rule type requires a value")
    regex = compare is L7CompareType.REGEX
    match kind:
        case L7RuleType.HEADER | L7RuleType.COOKIE:
            if not key:
                raise _invalid_rule("L7 rule type requires a key")
            _check_chars(key, _TOKEN, "key")
            if regex:
                _check_regex(value)
            elif kind is L7RuleType.HEADER:
                _check_chars(value, _HEADER_VALUE, "header value")
            else:
                _check_chars(value, _COOKIE_VALUE, "cookie value")
        case L7RuleType.HOST_NAME | L7RuleType.PATH | L7RuleType.FILE_TYPE:
            if kind is L7RuleType.FILE_TYPE and compare not in (
                L7CompareType.REGEX,
                L7CompareType.EQUAL_TO,
            ):
                raise _invalid_rule("invalid comparison type for rule type")
            if regex:
                _check_regex(value)
            elif compare in _VALUE_COMPARES:
                _check_chars(value, _NO_SPACE, "comparison value")
        case L7RuleType.SSL_CONN_HAS_CERT:
            if key:
                raise _invalid_rule(f'L7rule type {kind.value} does not use the "key" field.')
            if value.lower() != "true":
                raise _invalid_rule(f"L7rule value {value} is not a boolean True string.")
            _equal_to_only(rule)
        case L7RuleType.SSL_VERIFY_RESULT:
            if key:
                raise _invalid_rule(f'L7rule type {kind.value} does not use the "key" field.')
            _equal_to_only(rule)
            if not value.isdigit():
                raise _invalid_rule(f"L7rule type {kind.value} needs a int value, which is >= 0")
        case L7RuleType.SSL_DN_FIELD:
            if regex:
                _check_regex(value)
            if not key or not value:
                raise _invalid_rule(f"L7rule type {kind.value} needs to specify a key and a value.")
            if not _DN_FIELD.match(key):
                raise _invalid_rule("Invalid L7rule distinguished name field.")
    if any(c in value for c in "\r\n\x00"):
        raise _rule_error("Invalid characters in comparison value")


def _equal_to_only(rule: L7Rule) -> None:
    if rule.compare_type is not L7CompareType.EQUAL_TO:
        raise _invalid_rule(
            f"L7rule type {rule.type.value} only supports the EQUAL_TO compare type."
        )
