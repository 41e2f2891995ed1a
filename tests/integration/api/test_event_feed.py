"""``GET /v2/fulcrum/events`` on a real Postgres: the SSE framing with the documented envelope,
resume by ``after`` and ``Last-Event-ID``, live start, tenant isolation, the admin's view, bad
input, keepalives, the per-project limit and cleanup after a disconnect."""

from __future__ import annotations

from typing import Any

from tests.integration.api.conftest import SUBNET, Api, MakeApi
from tests.integration.api.sse import FEED, open_feed

LBS = "/v2/lbaas/loadbalancers"
OWN, OTHER, ADMIN = "a" * 32, "b" * 32, "c" * 32
MEMBER = {"X-Project-Id": OWN, "X-Roles": "member"}
OTHER_MEMBER = {"X-Project-Id": OTHER, "X-Roles": "member"}
ADMIN_ROLE = {"X-Project-Id": ADMIN, "X-Roles": "admin"}
ENVELOPE_KEYS = {
    "event_id",
    "event_type",
    "schema_version",
    "stream_id",
    "stream_version",
    "occurred_at",
    "metadata",
    "global_position",
    "data",
}


async def _create_lb(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    body = {"loadbalancer": {"vip_subnet_id": SUBNET}}
    return dict((await api.post(LBS, body, headers=headers, expect=201)).body["loadbalancer"])


async def test_events_carry_their_position_type_and_envelope(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    lb = await _create_lb(api, MEMBER)
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", MEMBER) as feed:
        event = await feed.next_event()
    assert event.event == "LoadBalancerCreated"
    assert set(event.data) == ENVELOPE_KEYS
    assert event.data["event_type"] == "LoadBalancerCreated"
    assert event.id == str(event.data["global_position"])
    assert event.data["stream_id"] == f"loadbalancer-{lb['id']}"
    assert event.data["metadata"]["project_id"] == OWN
    assert event.data["data"]["loadbalancer"]["id"] == lb["id"]


async def test_without_a_position_the_feed_starts_live(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    await _create_lb(api, MEMBER)
    async with open_feed(api.session, api.base + FEED, MEMBER) as feed:
        assert await feed.silent_for(1.0)
        lb = await _create_lb(api, MEMBER)
        event = await feed.next_event()
    assert event.data["data"]["loadbalancer"]["id"] == lb["id"]
