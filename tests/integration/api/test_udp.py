"""UDP and SCTP through the API, raw HTTP (octavia-fidelity 2.A): what is accepted, every 400
in Octavia's words and order, and the provider's 501 that comes only after all of them (SCTP:
the kernel has none; UDP: a driver without a network namespace of its own)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.integration.api.conftest import Api, MakeApi

LISTENERS = "/v2/lbaas/listeners"
POOLS = "/v2/lbaas/pools"
HMS = "/v2/lbaas/healthmonitors"
MEMBERS = "/v2/lbaas/pools/{}/members"
SCTP_501 = (
    "Provider 'amphora' does not support a requested option: SCTP is not supported by this kernel"
)
SCTP_MONITOR_501 = (
    "Provider 'amphora' does not support a requested option: SCTP health monitors are not "
    "supported: SCTP is not supported by this kernel, so no member could answer the monitor's "
    "SCTP INIT"
)
UDP_501 = (
    "Provider 'amphora' does not support a requested option: UDP needs amphorae with a network "
    "namespace of their own (the netns or docker driver); the configured amphora driver cannot "
    "serve UDP"
)


async def _expect(api: Api, path: str, body: dict[str, Any], status: int, text: str) -> None:
    reply = await api.post(path, body)
    assert reply.status == status, (body, reply.body)
    assert reply.fault() == text, (body, reply.body)
    assert reply.body["faultcode"] == ("Server" if status >= 500 else "Client")


async def test_udp_listener_pool_monitor_accepted_with_octavia_defaults(make_api: MakeApi) -> None:
    api = await make_api(udp_dataplane=True)
    lb = await api.create_lb()
    listener = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53},
    )
    assert listener["provisioning_status"] == "PENDING_CREATE"
    for name, value in {
        "connection_limit": -1,
        "timeout_client_data": 50000,
        "timeout_member_connect": 5000,
        "timeout_member_data": 50000,
        "timeout_tcp_inspect": 0,
        "insert_headers": {},
        "default_tls_container_ref": None,
        "sni_container_refs": [],
        "client_authentication": "NONE",
    }.items():
        assert listener[name] == value, name
    await api.settle(lb["id"])
    shown = await api.get(f"{LISTENERS}/{listener['id']}", expect=200)
    assert shown.body["listener"]["provisioning_status"] == "ACTIVE"
    # TCP:53 and SCTP-family are other port spaces; a second UDP:53 conflicts.
    await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 53},
    )
    await api.settle(lb["id"])
    reply = await api.post(
        LISTENERS,
        {"listener": {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}},
    )
    assert reply.status == 409
    assert reply.fault() == (
        "Another Listener on this Load Balancer is already using protocol UDP and protocol_port 53"
    )
    persistence = {
        "type": "SOURCE_IP",
        "persistence_timeout": 120,
        "persistence_granularity": "255.255.255.0",
    }
    pool = await api.create(
        "pools",
        "pool",
        {
            "listener_id": listener["id"],
            "protocol": "UDP",
            "lb_algorithm": "ROUND_ROBIN",
            "session_persistence": persistence,
        },
    )
    assert pool["session_persistence"] == {**persistence, "cookie_name": None}
    await api.settle(lb["id"])
    for kind in ("UDP-CONNECT", "TCP", "HTTP"):
        hm = await api.create(
            "healthmonitors",
            "healthmonitor",
            {"pool_id": pool["id"], "type": kind, "delay": 3, "timeout": 2, "max_retries": 2},
        )
        await api.settle(lb["id"])
        await api.delete(f"{HMS}/{hm['id']}", expect=204)
        await api.settle(lb["id"])
    # An LB-only pool takes any protocol.
    for protocol in ("UDP", "HTTP", "PROXYV2"):
        await api.create(
            "pools",
            "pool",
            {"loadbalancer_id": lb["id"], "protocol": protocol, "lb_algorithm": "SOURCE_IP"},
        )
        await api.settle(lb["id"])


async def test_every_udp_rule_in_octavia_words(make_api: MakeApi) -> None:
    api = await make_api(udp_dataplane=True)
    lb = await api.create_lb()
    base = {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}
    await _expect(
        api,
        LISTENERS,
        {"listener": {**base, "insert_headers": {"X-Forwarded-For": "true"}}},
        400,
        "insert-headers is not a valid option for a UDP protocol listener.",
    )
    await _expect(
        api,
        LISTENERS,
        {"listener": {**base, "protocol": "SCTP", "insert_headers": {"X-Forwarded-For": "true"}}},
        400,
        "insert-headers is not a valid option for a SCTP protocol listener.",
    )
    await _expect(
        api,
        LISTENERS,
        {"listener": {**base, "default_tls_container_ref": "https://kms/containers/x"}},
        400,
        "Validation failure: UDP protocol listener does not support TLS.",
    )
    udp = (await api.post(LISTENERS, {"listener": base}, expect=201)).body["listener"]
    await api.settle(lb["id"])
    http = (
        await api.post(
            LISTENERS,
            {"listener": {**base, "protocol": "HTTP", "protocol_port": 80}},
            expect=201,
        )
    ).body["listener"]
    await api.settle(lb["id"])
    await _expect(
        api,
        POOLS,
        {"pool": {"listener_id": udp["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}},
        400,
        "Validation failure: The pool protocol 'HTTP' is invalid while the listener protocol "
        "is 'UDP'.",
    )
    await _expect(
        api,
        POOLS,
        {"pool": {"listener_id": http["id"], "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}},
        400,
        "Validation failure: The pool protocol 'UDP' is invalid while the listener protocol "
        "is 'HTTP'.",
    )
    pool_base = {"listener_id": udp["id"], "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}
    persistence_cases = [
        (
            {"type": "SOURCE_IP", "cookie_name": "c"},
            "Validation failure: session_persistence SOURCE_IP type for UDP and SCTP protocols "
            "only accepts: type, persistence_timeout, persistence_granularity.",
        ),
        (
            {"type": "APP_COOKIE", "cookie_name": "c"},
            "Validation failure: Cookie names are not supported for UDP/SCTP pools.",
        ),
        (
            {"type": "HTTP_COOKIE"},
            "Validation failure: Session persistence of type HTTP_COOKIE is not supported for "
            "UDP/SCTP protocol pools.",
        ),
        (
            {"type": "APP_COOKIE"},
            "Validation failure: Session persistence of type APP_COOKIE is not supported for "
            "UDP/SCTP protocol pools.",
        ),
    ]
    for persistence, text in persistence_cases:
        await _expect(
            api, POOLS, {"pool": {**pool_base, "session_persistence": persistence}}, 400, text
        )
    await _expect(
        api,
        POOLS,
        {
            "pool": {
                "loadbalancer_id": lb["id"],
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "session_persistence": {"type": "SOURCE_IP", "persistence_timeout": 5},
            }
        },
        400,
        "Validation failure: persistence_timeout and persistence_granularity is only for UDP "
        "and SCTP protocol pools.",
    )
    pool = (await api.post(POOLS, {"pool": pool_base}, expect=201)).body["pool"]
    await api.settle(lb["id"])
    hm = {"pool_id": pool["id"], "delay": 3, "timeout": 2, "max_retries": 2}
    for kind in ("PING", "HTTPS", "TLS-HELLO"):
        await _expect(
            api,
            HMS,
            {"healthmonitor": {**hm, "type": kind}},
            400,
            "Validation failure: The associated pool protocol is UDP, so only a "
            "UDP-CONNECT/SCTP/TCP/HTTP health monitor is supported.",
        )
    await _expect(
        api,
        HMS,
        {"healthmonitor": {**hm, "type": "UDP-CONNECT", "delay": 1}},
        400,
        "Validation failure: The request delay value 1 should be larger than 3 for "
        "UDP-CONNECT health monitor type.",
    )
    created = (
        await api.post(HMS, {"healthmonitor": {**hm, "type": "UDP-CONNECT"}}, expect=201)
    ).body["healthmonitor"]
    await api.settle(lb["id"])
    reply = await api.put(f"{HMS}/{created['id']}", {"healthmonitor": {"delay": 2}})
    assert reply.status == 400
    assert reply.fault() == (
        "Validation failure: The request delay value 2 should be larger than 3 for "
        "UDP-CONNECT health monitor type."
    )
    # Members of another IP family than the VIP (the pool has a listener): the provider's 501,
    # after the aggregate's rules (the lock of a PENDING LB is a 409 first), also in a batch.
    v6 = {"address": "2001:db8::5", "protocol_port": 53}
    member = await api.create(
        "pools/" + pool["id"] + "/members", "member", {**v6, "address": "198.18.0.5"}
    )
    reply = await api.post(MEMBERS.format(pool["id"]), {"member": v6})
    assert reply.status == 409 and "immutable" in reply.fault(), reply.body
    await api.settle(lb["id"])
    reply = await api.put(MEMBERS.format(pool["id"]), {"members": [v6]})
    assert reply.status == 501 and "mixing IPv4 and IPv6" in reply.fault(), reply.body
    listed = await api.get(MEMBERS.format(pool["id"]), expect=200)
    assert [m["id"] for m in listed.body["members"]] == [member["id"]]
    await _expect(
        api,
        MEMBERS.format(pool["id"]),
        {"member": {"address": "2001:db8::5", "protocol_port": 53}},
        501,
        "Provider 'amphora' does not support a requested option: This provider doesn't support "
        "mixing IPv4 and IPv6 addresses for its VIP and members in UDP load balancers.",
    )
    # An SCTP monitor on a UDP pool passes validation (the pool's monitor first: 409 before
    # the provider); the kernel cannot run it.
    reply = await api.post(HMS, {"healthmonitor": {**hm, "type": "SCTP"}})
    assert reply.status == 409 and reply.fault() == "This pool already has a health monitor"
    await api.delete(f"{HMS}/{created['id']}", expect=204)
    await api.settle(lb["id"])
    await _expect(api, HMS, {"healthmonitor": {**hm, "type": "SCTP"}}, 501, SCTP_MONITOR_501)
    # On an HTTP pool, UDP-CONNECT and SCTP monitors are refused by type.
    http_pool = (
        await api.post(
            POOLS,
            {
                "pool": {
                    "loadbalancer_id": lb["id"],
                    "protocol": "HTTP",
                    "lb_algorithm": "ROUND_ROBIN",
                }
            },
            expect=201,
        )
    ).body["pool"]
    # Checked before the lock: a 400 while the LB is PENDING_UPDATE.
    for kind in ("UDP-CONNECT", "SCTP"):
        await _expect(
            api,
            HMS,
            {"healthmonitor": {**hm, "pool_id": http_pool["id"], "type": kind}},
            400,
            f"Validation failure: The {kind} type is only supported for pools of type UDP/SCTP.",
        )


async def test_sctp_and_driverless_udp_refused_after_every_400(make_api: MakeApi) -> None:
    for api, protocol, refusal in (
        (await make_api(udp_dataplane=True), "SCTP", SCTP_501),
        (await make_api(), "UDP", UDP_501),
    ):
        lb = await api.create_lb()
        base = {"loadbalancer_id": lb["id"], "protocol": protocol, "protocol_port": 53}
        # The 400s come first ...
        await _expect(
            api,
            LISTENERS,
            {"listener": {**base, "insert_headers": {"X-Forwarded-For": "true"}}},
            400,
            f"insert-headers is not a valid option for a {protocol} protocol listener.",
        )
        await _expect(
            api,
            POOLS,
            {
                "pool": {
                    "loadbalancer_id": lb["id"],
                    "protocol": protocol,
                    "lb_algorithm": "ROUND_ROBIN",
                    "session_persistence": {"type": "HTTP_COOKIE"},
                }
            },
            400,
            "Validation failure: Session persistence of type HTTP_COOKIE is not supported for "
            "UDP/SCTP protocol pools.",
        )
        # ... then the lock (409) ...
        tcp = (
            await api.post(LISTENERS, {"listener": {**base, "protocol": "TCP"}}, expect=201)
        ).body["listener"]
        reply = await api.post(LISTENERS, {"listener": base})
        assert reply.status == 409, reply.body
        assert reply.fault() == f"Load Balancer {lb['id']} is immutable and cannot be updated."
        await api.settle(lb["id"])
        # ... and the provider's refusal last; nothing was created, the LB stays ACTIVE.
        await _expect(api, LISTENERS, {"listener": base}, 501, refusal)
        await _expect(
            api,
            POOLS,
            {
                "pool": {
                    "loadbalancer_id": lb["id"],
                    "protocol": protocol,
                    "lb_algorithm": "ROUND_ROBIN",
                }
            },
            501,
            refusal,
        )
        await _expect(
            api,
            POOLS,
            {
                "pool": {
                    "listener_id": tcp["id"],
                    "protocol": protocol,
                    "lb_algorithm": "ROUND_ROBIN",
                }
            },
            400,
            f"Validation failure: The pool protocol '{protocol}' is invalid while the listener "
            "protocol is 'TCP'.",
        )
        shown = await api.get(f"/v2/lbaas/loadbalancers/{lb['id']}", expect=200)
        assert shown.body["loadbalancer"]["provisioning_status"] == "ACTIVE"
        listed = await api.get(f"{LISTENERS}?loadbalancer_id={lb['id']}", expect=200)
        assert [li["protocol"] for li in listed.body["listeners"]] == ["TCP"]
        # The single-call create refuses it too, after its validation.
        reply = await api.post(
            "/v2/lbaas/loadbalancers",
            {
                "loadbalancer": {
                    "vip_subnet_id": lb["vip_subnet_id"],
                    "listeners": [{"protocol": protocol, "protocol_port": 53}],
                }
            },
        )
        assert reply.status == 501 and reply.fault() == refusal
        # ... whose monitor rules are those of the separate calls.
        reply = await api.post(
            "/v2/lbaas/loadbalancers",
            {
                "loadbalancer": {
                    "vip_subnet_id": lb["vip_subnet_id"],
                    "pools": [
                        {
                            "name": "p",
                            "protocol": protocol,
                            "lb_algorithm": "ROUND_ROBIN",
                            "healthmonitor": {
                                "type": "PING", "delay": 3, "timeout": 2, "max_retries": 2,
                            },
                        }
                    ],
                }
            },
        )  # fmt: skip
        assert reply.status == 400
        assert reply.fault() == (
            f"Validation failure: The associated pool protocol is {protocol}, so only a "
            "UDP-CONNECT/SCTP/TCP/HTTP health monitor is supported."
        )


async def test_quota_comes_after_every_400_and_before_the_lock_and_the_provider(
    make_api: MakeApi,
) -> None:
    """octavia-fidelity 2.A.4: 400s, then the quota (403), then the lock (409), then the
    provider (501); here on a driver that cannot serve UDP, with listener and pool quotas
    that are used up."""
    api = await make_api(quota={"listener": 1, "pool": 0})
    lb = await api.create_lb(project_id=uuid.uuid4().hex)
    base = {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}
    tcp = await api.create("listeners", "listener", {**base, "protocol": "TCP"})
    await api.settle(lb["id"])
    quota = "Quota has been met for resources: {}"
    pool = {"loadbalancer_id": lb["id"], "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}
    mismatch = {"listener_id": tcp["id"], "protocol": "UDP", "lb_algorithm": "ROUND_ROBIN"}
    for pending in (False, True):
        if pending:  # the lock (409) comes after the 400s and the quota too
            await api.put(f"/v2/lbaas/loadbalancers/{lb['id']}", {"loadbalancer": {"name": "busy"}})
            shown = await api.get(f"/v2/lbaas/loadbalancers/{lb['id']}", expect=200)
            assert shown.body["loadbalancer"]["provisioning_status"] == "PENDING_UPDATE"
        await _expect(
            api,
            LISTENERS,
            {"listener": {**base, "insert_headers": {"X-Forwarded-For": "true"}}},
            400,
            "insert-headers is not a valid option for a UDP protocol listener.",
        )
        await _expect(api, LISTENERS, {"listener": base}, 403, quota.format("Listener"))
        await _expect(
            api,
            POOLS,
            {"pool": mismatch},
            400,
            "Validation failure: The pool protocol 'UDP' is invalid while the listener "
            "protocol is 'TCP'.",
        )
        await _expect(
            api,
            POOLS,
            {"pool": {**pool, "session_persistence": {"type": "HTTP_COOKIE"}}},
            400,
            "Validation failure: Session persistence of type HTTP_COOKIE is not supported for "
            "UDP/SCTP protocol pools.",
        )
        await _expect(api, POOLS, {"pool": pool}, 403, quota.format("Pool"))
    # The single-call create: its quota (the listener) before the provider's refusal.
    reply = await api.post(
        "/v2/lbaas/loadbalancers",
        {
            "loadbalancer": {
                "vip_subnet_id": lb["vip_subnet_id"],
                "project_id": lb["project_id"],
                "listeners": [{"protocol": "UDP", "protocol_port": 53}],
            }
        },
    )
    assert reply.status == 403 and reply.fault() == quota.format("Listener"), reply.body


async def test_the_amphora_driver_decides_whether_udp_is_served(make_api: MakeApi) -> None:
    """netns and docker amphorae serve UDP (nftables in their own namespace): the API accepts
    UDP for them without ``udp_dataplane``; the process driver's are refused with the 501."""
    for driver, status in (("docker", 201), ("netns", 201), ("process", 501)):
        api = await make_api(amphora_driver=driver)
        lb = await api.create_lb()
        body = {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}
        reply = await api.post(LISTENERS, {"listener": body})
        assert reply.status == status, (driver, reply.body)
        if status == 501:
            assert reply.fault() == UDP_501
