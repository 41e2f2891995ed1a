"""The API's request schemas, query parsing and cross-field rules (pure, no servers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import MultiDict

from libs.common.errors import NotImplementedByProvider, ValidationFailed
from services.api.domain import rules
from services.api.domain.kinds import LISTENER, LOADBALANCER
from services.api.http.errors import FrameworkError
from services.api.http.query import INVALID_ARGUMENTS, parse_list_query
from services.api.http.schemas import parse_body
from services.api.http.schemas.healthmonitor import HealthMonitorCreate
from services.api.http.schemas.l7 import L7PolicyCreate, L7RuleCreate
from services.api.http.schemas.listener import ListenerCreate, ListenerUpdate
from services.api.http.schemas.loadbalancer import LoadBalancerCreate
from services.api.http.schemas.member import MemberCreate
from services.api.http.schemas.pool import PoolCreate
from tests import builders

LB_ID = "8f2b7c1e-1111-4222-8333-444455556666"


def _raw(envelope: str, body: dict[str, Any]) -> bytes:
    return json.dumps({envelope: body}).encode()


def _error(model: type, envelope: str, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as info:
        parse_body(model, envelope, _raw(envelope, body))
    return info.value.message


def test_listener_defaults_and_strict_types() -> None:
    listener = parse_body(
        ListenerCreate,
        "listener",
        _raw(
            "listener", {"loadbalancer_id": LB_ID.upper(), "protocol": "HTTP", "protocol_port": 80}
        ),
    )
    assert listener.loadbalancer_id == LB_ID
    assert listener.model_dump(exclude_unset=True, mode="json") == {
        "loadbalancer_id": LB_ID,
        "protocol": "HTTP",
        "protocol_port": 80,
    }
    # Integers convert as WSME converts them: "80", 80.5 and true are integers.
    for given, port in (("80", 80), (80.5, 80), (True, 1)):
        raw = _raw(
            "listener", {"loadbalancer_id": LB_ID, "protocol": "HTTP", "protocol_port": given}
        )
        assert parse_body(ListenerCreate, "listener", raw).protocol_port == port
    body = {"loadbalancer_id": LB_ID, "protocol": "HTTP", "protocol_port": "eighty"}
    message = _error(ListenerCreate, "listener", body)
    assert message == (
        f"Invalid input for field/attribute listener. Value: '{ {'listener': body} }'. "
        "invalid literal for int() with base 10: 'eighty'"
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (
            {"protocol": "HTTP", "protocol_port": 0},
            "protocol_port. Value: '0'. Value should be greater or equal to 1",
        ),
        ({"protocol": "HTTP", "protocol_port": 65536}, "Value should be lower or equal to 65535"),
        (
            {"protocol": "SPDY", "protocol_port": 80},
            "field/attribute protocol. Value: 'SPDY'. Value should be one of",
        ),
        ({"protocol": "HTTP"}, "protocol_port. Value: 'None'. Mandatory field missing."),
        ({"protocol": "HTTP", "protocol_port": 80, "connection_limit": -2}, "connection_limit"),
        (
            {"protocol": "HTTP", "protocol_port": 80, "timeout_member_data": -1},
            "timeout_member_data",
        ),
        (
            {"protocol": "HTTP", "protocol_port": 80, "allowed_cidrs": ["300.0.0.0/8"]},
            "Invalid CIDR",
        ),
        (
            {"protocol": "HTTP", "protocol_port": 80, "tls_versions": ["TLSv9"]},
            "field/attribute tls_versions. Value: '['TLSv9']'",
        ),
        (
            {"protocol": "HTTP", "protocol_port": 80, "insert_headers": {"X-Forwarded-For": 1}},
            "insert_headers",
        ),
        (
            {"protocol": "HTTP", "protocol_port": 80, "vip_address": "1.2.3.4"},
            "Unknown attribute for argument listener.listener: vip_address",
        ),
    ],
)
def test_listener_rejections(body: dict[str, Any], fragment: str) -> None:
    assert fragment in _error(ListenerCreate, "listener", {"loadbalancer_id": LB_ID, **body})


def test_put_schemas_refuse_immutable_fields() -> None:
    for field, value in (("protocol", "TCP"), ("protocol_port", 81), ("loadbalancer_id", LB_ID)):
        message = _error(ListenerUpdate, "listener", {field: value})
        assert message == f"Unknown attribute for argument listener.listener: {field}"


def test_envelope_and_json_errors() -> None:
    with pytest.raises(ValidationFailed, match="^Request is not in valid JSON format$"):
        parse_body(LoadBalancerCreate, "loadbalancer", b"{")
    with pytest.raises(ValidationFailed, match="field/attribute loadbalancer. Value: 'None'"):
        parse_body(LoadBalancerCreate, "loadbalancer", b"{}")
    with pytest.raises(ValidationFailed, match="Unknown attribute for argument loadbalancer: pool"):
        parse_body(LoadBalancerCreate, "loadbalancer", b'{"loadbalancer": {}, "pool": {}}')
    with pytest.raises(ValidationFailed, match='^Missing argument: "load_balancer"$'):
        parse_body(LoadBalancerCreate, "loadbalancer", b"", "load_balancer")


@pytest.mark.parametrize(
    ("model", "envelope", "body", "fragment"),
    [
        (
            MemberCreate,
            "member",
            {"address": "10.0.0.300", "protocol_port": 80},
            "Value: '10.0.0.300'. Value should be IPv4 or IPv6 format",
        ),
        (
            MemberCreate,
            "member",
            {"address": "10.0.0.3", "protocol_port": 80, "weight": 257},
            "weight",
        ),
        (
            MemberCreate,
            "member",
            {"address": "10.0.0.3", "protocol_port": 80, "backup": "No"},
            "Value not an unambiguous boolean: No",
        ),
        (PoolCreate, "pool", {"protocol": "HTTP", "lb_algorithm": "RANDOM"}, "lb_algorithm"),
        (
            PoolCreate,
            "pool",
            {
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "session_persistence": {"type": "X"},
            },
            "field/attribute type. Value: 'X'. Value should be one of: ",
        ),
        (
            HealthMonitorCreate,
            "healthmonitor",
            {"pool_id": LB_ID, "type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 11},
            "max_retries",
        ),
        (
            HealthMonitorCreate,
            "healthmonitor",
            {
                "pool_id": LB_ID,
                "type": "HTTP",
                "delay": 1,
                "timeout": 1,
                "max_retries": 1,
                "expected_codes": "20",
            },
            "expected_codes",
        ),
        (
            HealthMonitorCreate,
            "healthmonitor",
            {
                "pool_id": LB_ID,
                "type": "HTTP",
                "delay": 1,
                "timeout": 1,
                "max_retries": 1,
                "http_version": 2.0,
            },
            "http_version",
        ),
        (
            HealthMonitorCreate,
            "healthmonitor",
            {
                "pool_id": LB_ID,
                "type": "HTTP",
                "delay": 1,
                "timeout": 1,
                "max_retries": 1,
                "url_path": "x",
            },
            "url_path",
        ),
        (
            L7PolicyCreate,
            "l7policy",
            {"listener_id": LB_ID, "action": "REDIRECT_TO_URL", "redirect_url": "javascript:x"},
            "redirect_url",
        ),
        (
            L7PolicyCreate,
            "l7policy",
            {"listener_id": LB_ID, "action": "REJECT", "position": 2147483648},
            "position",
        ),
        (
            L7RuleCreate,
            "rule",
            {"type": "PATH", "compare_type": "EQUAL_TO", "value": "v" * 256},
            "value",
        ),
        (
            LoadBalancerCreate,
            "loadbalancer",
            {"vip_subnet_id": LB_ID, "tags": ["ok", "t" * 256]},
            "field/attribute tags. Value: '['ok', 'ttt",
        ),
        (
            LoadBalancerCreate,
            "loadbalancer",
            {"vip_qos_policy_id": "not-a-uuid"},
            "Value should be UUID format",
        ),
    ],
)
def test_field_rules(model: type, envelope: str, body: dict[str, Any], fragment: str) -> None:
    assert fragment in _error(model, envelope, body)


def test_expected_codes_forms() -> None:
    base = {"pool_id": LB_ID, "type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 1}
    for codes in ("200", "200,202", "200, 204", "200-299"):
        hm = parse_body(
            HealthMonitorCreate,
            "healthmonitor",
            _raw("healthmonitor", {**base, "expected_codes": codes}),
        )
        assert hm.expected_codes == codes


def test_list_query_parsing() -> None:
    query = parse_list_query(
        LOADBALANCER,
        MultiDict(
            [
                ("name", "x"),
                ("admin_state_up", "True"),
                ("sort", "name:desc"),
                ("limit", "5"),
                ("fields", "id,name"),
                ("tags", "a,b"),
            ]
        ),
        1000,
    )
    assert query.filters == (("name", "x"), ("admin_state_up", "true"))
    assert query.sort == (("name", True), ("created_at", False), ("id", False))
    assert query.limit == 5 and query.fields == ("id", "name") and query.tags_all == ("a", "b")
    assert parse_list_query(LOADBALANCER, MultiDict([("limit", "5000")]), 1000).limit == 1000
    assert parse_list_query(LISTENER, MultiDict([("loadbalancer_id", LB_ID)]), 10).filters == (
        ("loadbalancer_id", LB_ID),
    )
    for bad in ([("nope", "1")], [("name", "a"), ("name", "b")], [("protocol_port", "x")]):
        with pytest.raises(ValidationFailed, match=INVALID_ARGUMENTS):
            parse_list_query(LISTENER, MultiDict(bad), 10)
    with pytest.raises(ValidationFailed, match="sort key"):
        parse_list_query(LOADBALANCER, MultiDict([("sort", "nope")]), 10)
    with pytest.raises(FrameworkError, match="^Supplied sort direction 'up' is not valid.$"):
        parse_list_query(LOADBALANCER, MultiDict([("sort_key", "name"), ("sort_dir", "UP")]), 10)
    with pytest.raises(FrameworkError, match="^Supplied pagination limit 'many' is not valid.$"):
        parse_list_query(LOADBALANCER, MultiDict([("limit", "many")]), 10)


def test_cross_field_rules() -> None:
    lb = builders.loadbalancer("127.77.0.10")
    tls = builders.listener(lb, 443, "TERMINATED_HTTPS")
    with pytest.raises(ValidationFailed, match="certificate container"):
        rules.check_listener(tls, lb)
    rules.check_listener(tls.updated({"default_tls_container_ref": "c"}), lb)
    udp = builders.listener(lb, 53, "UDP")
    rules.check_listener(udp, lb)  # coherent; whether it is served is the provider's call
    with pytest.raises(NotImplementedByProvider, match="SCTP is not supported by this kernel"):
        rules.check_servable("SCTP", udp_dataplane=True)
    with pytest.raises(NotImplementedByProvider, match="cannot serve UDP"):
        rules.check_servable("UDP", udp_dataplane=False)
    rules.check_servable("UDP", udp_dataplane=True)
    with pytest.raises(ValidationFailed, match="insert-headers is not a valid option for a UDP"):
        rules.check_listener(udp.updated({"insert_headers": {"X-Forwarded-For": "true"}}), lb)
    http = builders.listener(lb, 80, "HTTP", insert_headers={"X-SSL-Client-DN": "true"})
    with pytest.raises(ValidationFailed, match="X-SSL-Client-DN"):
        rules.check_listener(http, lb)
    hsts = builders.listener(lb, 80, "HTTP", hsts_preload=True)
    with pytest.raises(ValidationFailed):
        rules.check_listener(hsts, lb)
    pool = builders.pool(lb, session_persistence={"type": "APP_COOKIE"})
    with pytest.raises(ValidationFailed, match="cookie_name"):
        rules.check_pool(pool)
    member = builders.member(builders.pool(lb), 80, address="169.254.169.254")
    with pytest.raises(ValidationFailed, match="is not a valid option for member address"):
        rules.check_member(member, {"169.254.169.254"}, set())


def test_l7policy_action_settling() -> None:
    # REJECT nulls url and pool only (Octavia's sanitizing).
    assert rules.settle_l7policy({}, {"action": "REJECT", "redirect_url": None}) == {
        "action": "REJECT",
        "redirect_url": None,
        "redirect_pool_id": None,
    }
    changes = rules.settle_l7policy({"action": "REJECT"}, {"redirect_url": "http://x.example"})
    assert changes["action"] == "REDIRECT_TO_URL" and changes["redirect_http_code"] == 302
    changes = rules.settle_l7policy({"action": "REJECT"}, {"redirect_pool_id": LB_ID})
    assert changes["action"] == "REDIRECT_TO_POOL" and changes["redirect_url"] is None
    with pytest.raises(ValidationFailed):
        rules.settle_l7policy({}, {"action": "REDIRECT_PREFIX"})
    with pytest.raises(ValidationFailed):
        rules.settle_l7policy({}, {"redirect_pool_id": LB_ID, "redirect_url": "http://x.example"})
