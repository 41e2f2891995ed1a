"""Octavia fidelity, request parsing and framework errors (octavia-fidelity.md 2.C, 2.D):
WSME faults for bodies (media type, JSON, missing argument, unknown attributes, types and
conversions) and pecan's body for what the framework answers itself."""

from __future__ import annotations

from tests.integration.api.conftest import SUBNET, Api, MakeApi

LBS = "/v2/lbaas/loadbalancers"
POOLS = "/v2/lbaas/pools"
MISSING = "0b4d7c1e-0000-4000-8000-000000000000"


async def listener(api: Api) -> tuple[str, str]:
    lb = await api.create_lb()
    created = await api.create(
        "listeners",
        "listener",
        {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80},
    )
    await api.settle(lb["id"])
    return lb["id"], created["id"]


def wsme(reply: object, text: str) -> None:
    assert reply.body == {"faultcode": "Client", "faultstring": text, "debuginfo": None}  # type: ignore[attr-defined]


async def test_media_type_json_and_missing_argument(api: Api) -> None:
    body = b'{"loadbalancer": {"vip_subnet_id": "%s"}}' % SUBNET.encode()
    reply = await api.call("POST", LBS, raw=body, headers={"Content-Type": "text/plain"})
    assert reply.status == 415
    wsme(reply, "Unknown mimetype: text/plain")
    assert reply.headers["Content-Type"].startswith("application/json")
    assert "x-openstack-request-id" in {k.lower() for k in reply.headers}
    for mime in ("application/javascript", "text/javascript", "application/json; charset=utf-8"):
        ok = await api.call("POST", LBS, raw=body, headers={"Content-Type": mime})
        assert ok.status == 201, mime
    for raw in (b"{bad json", b'{"loadbalancer": '):
        reply = await api.call("POST", LBS, raw=raw, expect=400)
        wsme(reply, "Request is not in valid JSON format")
    lb = await api.create_lb()
    reply = await api.call("PUT", f"{LBS}/{lb['id']}", raw=b"{bad", expect=400)
    wsme(reply, "Request is not in valid JSON format")
    for path, arg in (
        (LBS, "load_balancer"),
        ("/v2/lbaas/listeners", "listener_"),
        (POOLS, "pool_"),
        ("/v2/lbaas/healthmonitors", "health_monitor_"),
        ("/v2/lbaas/l7policies", "l7policy_"),
        ("/v2/lbaas/flavors", "flavor_"),
        ("/v2/lbaas/flavorprofiles", "flavor_profile_"),
        ("/v2/lbaas/availabilityzones", "availability_zone_"),
        ("/v2/lbaas/availabilityzoneprofiles", "availability_zone_profile_"),
    ):
        reply = await api.call("POST", path, raw=b"", expect=400)
        wsme(reply, f'Missing argument: "{arg}"')
    reply = await api.call("PUT", "/v2/lbaas/quotas/p1", raw=b"", expect=400)
    wsme(reply, 'Missing argument: "quotas"')


async def test_text_xml_is_read_as_wsme_reads_it(api: Api) -> None:
    """octavia-fidelity 2.C.1: ``text/xml`` goes to WSME's XML reader, so a well-formed body
    creates; one that is not well-formed is WSME's server-side 500 with the parser's text."""
    xml = {"Content-Type": "text/xml"}
    body = (
        f"<request><loadbalancer><vip_subnet_id>{SUBNET}</vip_subnet_id><name>x</name>"
        '<admin_state_up>false</admin_state_up><description nil="true"/>'
        "<tags><item>a</item><item>b</item></tags></loadbalancer></request>"
    ).encode()
    created = await api.call("POST", LBS, raw=body, headers=xml, expect=201)
    lb = created.body["loadbalancer"]
    assert (lb["name"], lb["admin_state_up"], lb["tags"]) == ("x", False, ["a", "b"])
    assert lb["description"] == "" and lb["vip_subnet_id"] == SUBNET
    assert created.headers["Content-Type"].startswith("application/json")
    json_body = b'{"loadbalancer": {"vip_subnet_id": "%s"}}' % SUBNET.encode()
    reply = await api.call("POST", LBS, raw=json_body, headers=xml)
    assert reply.status == 500
    assert reply.body == {
        "faultcode": "Server",
        "faultstring": "not well-formed (invalid token): line 1, column 0",
        "debuginfo": None,
    }
    reply = await api.call("POST", LBS, raw=b"<request><loadbalancer>", headers=xml)
    assert reply.status == 500 and reply.body["faultstring"].startswith("no element found")
    bogus = b"<r><loadbalancer><vip_subnet_id>%s</vip_subnet_id><bogus>1</bogus></loadbalancer></r>"
    reply = await api.call("POST", LBS, raw=bogus % SUBNET.encode(), headers=xml, expect=400)
    wsme(reply, "Unknown attribute for argument load_balancer.loadbalancer: bogus")
    reply = await api.call(
        "POST", LBS, raw=body, headers={"Content-Type": "application/xml"}, expect=415
    )
    wsme(reply, "Unknown mimetype: application/xml")


async def test_unknown_attributes_name_the_argument_path(api: Api) -> None:
    sub = {"vip_subnet_id": SUBNET}
    cases = [
        (
            LBS,
            {"loadbalancer": sub, "extra": 1},
            "Unknown attribute for argument load_balancer: extra",
        ),
        (LBS, {"lb": sub}, "Unknown attribute for argument load_balancer: lb"),
        (
            LBS,
            {"loadbalancer": {**sub, "bogus": 1}},
            "Unknown attribute for argument load_balancer.loadbalancer: bogus",
        ),
        (
            LBS,
            {"loadbalancer": {**sub, "bogus": 1, "other": 2}},
            "Unknown attributes for argument load_balancer.loadbalancer: bogus, other",
        ),
    ]
    for path, body, text in cases:
        wsme(await api.post(path, body, expect=400), text)
    lb_id, listener_id = await listener(api)
    reply = await api.post(
        "/v2/lbaas/listeners",
        {
            "listener": {
                "loadbalancer_id": lb_id,
                "protocol": "TCP",
                "protocol_port": 1,
                "colour": 1,
            }
        },
        expect=400,
    )
    wsme(reply, "Unknown attribute for argument listener_.listener: colour")
    pool = {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    reply = await api.post(POOLS, {"pool": {**pool, "speed": 1}}, expect=400)
    wsme(reply, "Unknown attribute for argument pool_.pool: speed")
    persistence = {"type": "SOURCE_IP", "foo": 1}
    reply = await api.post(
        POOLS, {"pool": {**pool, "session_persistence": persistence}}, expect=400
    )
    wsme(reply, "Unknown attribute for argument pool_.pool.session_persistence: foo")
    reply = await api.put(f"/v2/lbaas/listeners/{listener_id}", {"healthmonitor": {}}, expect=400)
    wsme(reply, "Unknown attribute for argument listener_: healthmonitor")


async def test_type_errors_and_conversions(api: Api) -> None:
    def lb(**fields: object) -> dict[str, object]:
        return {"loadbalancer": {"vip_subnet_id": SUBNET, **fields}}

    cases = [
        (
            lb(name=123),
            "Invalid input for field/attribute name. Value: '123'. Value should be string",
        ),
        (
            lb(tags=[1, 2]),
            "Invalid input for field/attribute tags. Value: '[1, 2]'. Value should be string",
        ),
        (
            lb(vip_address="bad"),
            "Invalid input for field/attribute vip_address. Value: 'bad'. "
            "Value should be IPv4 or IPv6 format",
        ),
        (
            {"loadbalancer": {"vip_subnet_id": "not-a-uuid"}},
            "Invalid input for field/attribute vip_subnet_id. Value: 'not-a-uuid'. "
            "Value should be UUID format",
        ),
        (
            {"loadbalancer": {"vip_network_id": "not-a-uuid"}},
            "Invalid input for field/attribute vip_network_id. Value: 'not-a-uuid'. "
            "Value should be UUID format",
        ),
        (
            lb(flavor_id="nope"),
            "Invalid input for field/attribute flavor_id. Value: 'nope'. "
            "Value should be UUID format",
        ),
    ]
    for body, text in cases:
        wsme(await api.post(LBS, body, expect=400), text)
    body = lb(admin_state_up="maybe")
    reply = await api.post(LBS, body, expect=400)
    wsme(
        reply,
        f"Invalid input for field/attribute load_balancer. Value: '{body}'. "
        "Value not an unambiguous boolean: maybe",
    )
    # Conversions WSME makes: these are accepted.
    for value, expected in (("yes", True), ("off", False), (0, False), ("t", True)):
        created = await api.post(LBS, lb(admin_state_up=value), expect=201)
        assert created.body["loadbalancer"]["admin_state_up"] is expected, value
    dashless = SUBNET.replace("-", "")
    created = await api.post(LBS, {"loadbalancer": {"vip_subnet_id": dashless}}, expect=201)
    assert created.body["loadbalancer"]["vip_subnet_id"] == SUBNET
    created = await api.post(LBS, lb(tenant_id="tenant-a"), expect=201)
    assert created.body["loadbalancer"]["project_id"] == "tenant-a"

    lb_id = (await api.create_lb())["id"]
    listener_body = {"loadbalancer_id": lb_id, "protocol": "TCP"}
    for port, expected_port in (("80", 80), (81.5, 81), (True, 1)):
        reply = await api.post(
            "/v2/lbaas/listeners",
            {"listener": {**listener_body, "protocol_port": port}},
            expect=201,
        )
        assert reply.body["listener"]["protocol_port"] == expected_port
        await api.settle(lb_id)
    body = {"listener": {**listener_body, "protocol_port": "eighty"}}
    reply = await api.post("/v2/lbaas/listeners", body, expect=400)
    wsme(
        reply,
        f"Invalid input for field/attribute listener_. Value: '{body}'. "
        "invalid literal for int() with base 10: 'eighty'",
    )
    body = {
        "listener": {**listener_body, "protocol_port": 82, "insert_headers": ["X-Forwarded-For"]}
    }
    reply = await api.post("/v2/lbaas/listeners", body, expect=400)
    wsme(
        reply,
        f"Invalid input for field/attribute listener_. Value: '{body}'. "
        "Value not a valid dict: ['X-Forwarded-For']",
    )


async def test_member_subnet_uuid_and_address(api: Api) -> None:
    lb_id = (await api.create_lb())["id"]
    pool = await api.create(
        "pools",
        "pool",
        {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
    )
    members = f"{POOLS}/{pool['id']}/members"
    reply = await api.post(
        members, {"member": {"address": "10.0.0.1", "protocol_port": 80, "subnet_id": "not-a-uuid"}}
    )
    wsme(
        reply,
        "Invalid input for field/attribute subnet_id. Value: 'not-a-uuid'. "
        "Value should be UUID format",
    )
    reply = await api.post(members, {"member": {"address": "bad", "protocol_port": 80}}, expect=400)
    wsme(
        reply,
        "Invalid input for field/attribute address. Value: 'bad'. "
        "Value should be IPv4 or IPv6 format",
    )
    reply = await api.call("PUT", members, raw=b"{bad", expect=400)
    wsme(reply, "Request is not in valid JSON format")
    reply = await api.call("PUT", members, raw=b"", expect=400)
    wsme(reply, 'Missing argument: "members_"')


async def test_framework_errors_use_the_pecan_body(api: Api) -> None:
    reply = await api.get("/v2/lbaas/no-such-collection", expect=404)
    assert reply.body == {"code": 404, "title": "Not Found", "description": ""}
    lb = await api.create_lb()
    reply = await api.call("PATCH", f"{LBS}/{lb['id']}", expect=405)
    assert reply.body == {"code": 405, "title": "Method Not Allowed", "description": ""}
    assert reply.headers["Allow"] == "DELETE, GET, POST, PUT"
    reply = await api.call("POST", LBS, raw=b"\xff\xfe", expect=400)
    assert reply.body == {"code": 400, "title": "Bad Request", "description": ""}
    assert "x-openstack-request-id" in {k.lower() for k in reply.headers}
    for bad in ("abc", "1.5"):
        reply = await api.get(f"{LBS}?limit={bad}", expect=400)
        assert reply.body == {
            "code": 400,
            "title": "Bad Request",
            "description": f"Supplied pagination limit '{bad}' is not valid.",
        }
    assert (await api.get(f"{LBS}?limit=0", expect=200)).body["loadbalancers"]
    assert (await api.get(f"{LBS}?limit=-3", expect=200)).body["loadbalancers"]
    for query in ("sort=name:UP", "sort_key=name&sort_dir=Sideways"):
        reply = await api.get(f"{LBS}?{query}", expect=400)
        direction = query.rsplit(":", 1)[-1].rsplit("=", 1)[-1].lower()
        assert reply.body == {
            "code": 400,
            "title": "Bad Request",
            "description": f"Supplied sort direction '{direction}' is not valid.",
        }
    wsme(await api.get(f"{LBS}?sort=nope", expect=400), "Supplied sort key 'nope' is not valid.")


async def test_missing_parent_collections(api: Api) -> None:
    members = f"{POOLS}/{MISSING}/members"
    expected = {"code": 404, "title": "Bad Request", "description": f"Pool {MISSING} not found."}
    for method, path, raw in (
        ("GET", members, None),
        ("POST", members, b"{bad"),
        ("PUT", members, b'{"members": []}'),
        ("GET", f"{members}/{MISSING}", None),
        ("PUT", f"{members}/{MISSING}", b"{}"),
        ("DELETE", f"{members}/{MISSING}", None),
    ):
        reply = await api.call(method, path, raw=raw, expect=404)
        assert reply.body == expected, (method, path)
    rules = f"/v2/lbaas/l7policies/{MISSING}/rules"
    reply = await api.get(f"{rules}/{MISSING}", expect=404)
    assert reply.body == {
        "code": 404,
        "title": "Bad Request",
        "description": f"L7Policy {MISSING} not found.",
    }
    lb_id = (await api.create_lb())["id"]
    pool = await api.create(
        "pools",
        "pool",
        {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
    )
    reply = await api.get(f"{POOLS}/{pool['id']}/members/{MISSING}", expect=404)
    wsme(reply, f"Member {MISSING} not found.")
    reply = await api.get(f"{LBS}?marker={MISSING}", expect=400)
    wsme(reply, f"Supplied pagination marker '{MISSING}' is not valid.")


async def test_missing_argument_names_of_nested_resources(api: Api) -> None:
    lb_id = (await api.create_lb())["id"]
    listener = await api.create_listener(lb_id)
    pool = await api.create(
        "pools",
        "pool",
        {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
    )
    await api.settle(lb_id)
    member = await api.create(
        f"pools/{pool['id']}/members", "member", {"address": "127.0.0.1", "protocol_port": 80}
    )
    await api.settle(lb_id)
    policy = await api.create(
        "l7policies", "l7policy", {"listener_id": listener["id"], "action": "REJECT"}
    )
    await api.settle(lb_id)
    rule = await api.create(
        f"l7policies/{policy['id']}/rules",
        "rule",
        {"type": "PATH", "compare_type": "EQUAL_TO", "value": "/a"},
    )
    await api.settle(lb_id)
    members = f"{POOLS}/{pool['id']}/members"
    rules = f"/v2/lbaas/l7policies/{policy['id']}/rules"
    for method, path, arg in (
        ("POST", members, "member_"),
        ("PUT", f"{members}/{member['id']}", "member_"),
        ("POST", rules, "rule_"),
        ("PUT", f"{rules}/{rule['id']}", "l7rule_"),
        ("PUT", f"/v2/lbaas/listeners/{listener['id']}", "listener_"),
        ("PUT", f"{POOLS}/{pool['id']}", "pool_"),
        ("PUT", f"/v2/lbaas/l7policies/{policy['id']}", "l7policy_"),
    ):
        reply = await api.call(method, path, raw=b"", expect=400)
        wsme(reply, f'Missing argument: "{arg}"')
    reply = await api.put(f"{rules}/{rule['id']}", {"rule": {"bogus": 1}}, expect=400)
    wsme(reply, "Unknown attribute for argument l7rule_.rule: bogus")


async def test_an_infinite_or_non_positive_limit_lists_past_the_page_cap(make_api: MakeApi) -> None:
    """Octavia's pagination: no ``limit`` is ``pagination_max_limit``; ``infinite`` or a limit
    below 1 is every row (and no "next" link), a larger one is capped."""
    api = await make_api(pagination_max_limit=2)
    for _ in range(3):
        await api.create_lb()
    capped = (await api.get(f"{LBS}?limit=50", expect=200)).body
    assert len(capped["loadbalancers"]) == 2
    assert [link["rel"] for link in capped["loadbalancers_links"]] == ["next"]
    assert len((await api.get(LBS, expect=200)).body["loadbalancers"]) == 2
    for limit in ("infinite", "0", "-1"):
        whole = (await api.get(f"{LBS}?limit={limit}", expect=200)).body
        assert len(whole["loadbalancers"]) == 3, limit
        assert whole["loadbalancers_links"] == [], limit
