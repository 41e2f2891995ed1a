"""``GET /v2/fulcrum/events`` on a real Postgres: the SSE framing with the documented envelope,
resume by ``after`` and ``Last-Event-ID``, live start, tenant isolation, the admin's view, bad
input, keepalives, the per-project limit and cleanup after a disconnect."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from libs.common.events import Metadata
from libs.common.events.amphora import AmphoraFailed
from libs.common.events.housekeeping import LoadBalancerRedriveRequested
from libs.common.events.loadbalancer import LoadBalancerFailoverRequested
from libs.common.eventstore import PostgresEventStore
from libs.common.service import DB
from libs.common.streams import StreamId
from services.api.auth.identity import save
from services.api.auth.tokens import new_token_key
from services.api.http.resources.events import OPEN_FEEDS
from tests.integration.api.conftest import SUBNET, Api, MakeApi
from tests.integration.api.sse import FEED, open_feed
from tests.integration.api.test_keystone_reads import DEMO, _identity, _token
from tests.integration.api.test_keystone_reads import OTHER as OTHER_PROJECT

LBS = "/v2/lbaas/loadbalancers"
OWN, OTHER, ADMIN = "a" * 32, "b" * 32, "c" * 32
MEMBER = {"X-Project-Id": OWN, "X-Roles": "member"}
OTHER_MEMBER = {"X-Project-Id": OTHER, "X-Roles": "member"}
ADMIN_ROLE = {"X-Project-Id": ADMIN, "X-Roles": "admin"}
FAST = {"poll_interval": 0.1}  # the store is read 10 times a second: short waits suffice
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
    api = await make_api(auth_strategy="testing", feed=FAST)
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
    api = await make_api(auth_strategy="testing", feed=FAST)
    await _create_lb(api, MEMBER)
    async with open_feed(api.session, api.base + FEED, MEMBER) as feed:
        assert await feed.silent_for(0.5)
        lb = await _create_lb(api, MEMBER)
        event = await feed.next_event()
    assert event.data["data"]["loadbalancer"]["id"] == lb["id"]


async def _append_internal(api: Api, lb_id: str, project: str) -> None:
    """An amphora event and a redrive of ``lb_id``, both stamped with ``project``."""
    store = PostgresEventStore(api.app[DB])
    meta = Metadata(actor="test", project_id=project)
    failed = AmphoraFailed(amphora_id="amp-x", loadbalancer_id=lb_id, reason="test")
    await store.append(StreamId.amphora("amp-x"), 0, [failed], meta)
    stream = StreamId.loadbalancer(lb_id)
    redrive = LoadBalancerRedriveRequested(
        attempt=1, pending_status="PENDING_UPDATE", pending_seconds=1.0
    )
    await store.append(stream, await store.stream_version(stream), [redrive], meta)


async def test_a_tenant_sees_its_own_tenant_events_only(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed=FAST)
    own_lb = await _create_lb(api, MEMBER)
    await api.activate(own_lb["id"])  # written by the provisioner: no project of its own
    other_lb = await _create_lb(api, OTHER_MEMBER)
    await _append_internal(api, own_lb["id"], OWN)
    await api.put(f"{LBS}/{own_lb['id']}", {"loadbalancer": {"name": "x"}}, headers=ADMIN_ROLE)
    own_last = await _create_lb(api, MEMBER)
    other_last = await _create_lb(api, OTHER_MEMBER)
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", MEMBER) as feed:
        own = await feed.events(4)
        assert await feed.silent_for(0.5)
    assert [e.event for e in own] == [
        "LoadBalancerCreated",
        "LoadBalancerActivated",
        "LoadBalancerUpdated",  # an admin's change to the tenant's LB
        "LoadBalancerCreated",
    ]
    assert own[-1].data["data"]["loadbalancer"]["id"] == own_last["id"]
    assert {e.data["metadata"]["project_id"] for e in own} == {OWN}
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", OTHER_MEMBER) as feed:
        other = await feed.events(2)
        assert await feed.silent_for(0.5)
    assert [e.data["stream_id"] for e in other] == [
        f"loadbalancer-{other_lb['id']}",
        f"loadbalancer-{other_last['id']}",
    ]


async def test_an_admin_sees_everything_or_one_project(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed=FAST)
    own_lb = await _create_lb(api, MEMBER)
    await _create_lb(api, OTHER_MEMBER)
    await _append_internal(api, own_lb["id"], OWN)
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", ADMIN_ROLE) as feed:
        every = await feed.until_silent(0.5)
    # Each project's first request also records its quota (QuotaUpdated, no project).
    assert [e.event for e in every if e.event != "QuotaUpdated"] == [
        "LoadBalancerCreated",
        "LoadBalancerCreated",
        "AmphoraFailed",
        "LoadBalancerRedriveRequested",
    ]
    assert [int(e.id) for e in every] == sorted(int(e.id) for e in every)
    narrowed = f"{api.base}{FEED}?after=0&project_id={OTHER}"
    async with open_feed(api.session, narrowed, ADMIN_ROLE) as feed:
        narrow = await feed.until_silent(0.5)
    assert [e.event for e in narrow] == ["LoadBalancerCreated"]
    assert narrow[0].data["metadata"]["project_id"] == OTHER
    own_only = f"{api.base}{FEED}?after=0&project_id={OWN}"
    async with open_feed(api.session, own_only, MEMBER) as feed:
        (mine,) = await feed.events(1)
    assert mine.data["stream_id"] == f"loadbalancer-{own_lb['id']}"
    refused = await api.get(f"{FEED}?project_id={OTHER}", headers=MEMBER, expect=403)
    assert refused.fault() == "Policy does not allow this request to be performed."


async def test_resume_after_a_position_or_the_last_event_id(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed=FAST)
    for _ in range(3):
        await _create_lb(api, MEMBER)
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", MEMBER) as feed:
        first, second, third = await feed.events(3)
    positions = [int(e.id) for e in (first, second, third)]
    assert positions == sorted(positions)
    async with open_feed(api.session, f"{api.base}{FEED}?after={first.id}", MEMBER) as feed:
        assert [e.id for e in await feed.events(2)] == [second.id, third.id]
        assert await feed.silent_for(0.5)
    # The header wins over the query argument, as a browser's EventSource reconnects.
    headers = {**MEMBER, "Last-Event-ID": second.id}
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", headers) as feed:
        assert (await feed.next_event()).id == third.id
        fourth = await _create_lb(api, MEMBER)
        live = await feed.next_event()
    assert live.data["data"]["loadbalancer"]["id"] == fourth["id"]
    assert int(live.id) > int(third.id)


async def test_bad_positions_and_arguments_are_400_faults(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed=FAST)
    for query, headers in [
        ("?after=-1", {}),
        ("?after=abc", {}),
        ("?after=1.5", {}),
        ("?after=", {}),
        ("?after=99999999999999999999", {}),
        ("?after=1&after=2", {}),
        ("", {"Last-Event-ID": "x"}),
        ("?after=1", {"Last-Event-ID": "-3"}),
        ("?project_id=", {}),
        ("?limit=5", {}),
    ]:
        reply = await api.get(FEED + query, headers={**MEMBER, **headers})
        assert reply.status == 400, (query, headers, reply.status, reply.body)
        assert reply.fault(), (query, headers)
    reply = await api.get(FEED + "?after=x", headers=MEMBER, expect=400)
    assert "after" in reply.fault() and "'x'" in reply.fault()
    no_role = {"X-Project-Id": OWN, "X-Roles": ""}
    assert (await api.get(FEED, headers=no_role, expect=403)).fault()
    refused = await api.get(FEED, headers={**MEMBER, "Accept": "text/html"}, expect=406)
    assert "text/event-stream" in refused.body["errors"][0]["detail"]


async def test_event_source_accept_headers_are_served(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed=FAST)
    for accept in ("text/event-stream", "text/event-stream;q=1, */*;q=0.1", "*/*"):
        async with open_feed(api.session, api.base + FEED, {**MEMBER, "Accept": accept}):
            pass


async def test_keepalive_comments_fill_silences(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed={"keepalive_seconds": 0.3})
    async with open_feed(api.session, api.base + FEED, MEMBER) as feed:
        assert await feed.silent_for(1.2)
    assert len(feed.comments) >= 2 and set(feed.comments) == {": keepalive"}


async def _wait_held(api: Api, project: str, count: int) -> None:
    for _ in range(100):
        if api.app[OPEN_FEEDS].slots.held(project) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{project} still holds {api.app[OPEN_FEEDS].slots.held(project)}")


async def test_feeds_per_project_are_limited_and_freed_on_disconnect(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed={"max_per_project": 2, "poll_interval": 0.1})
    async with open_feed(api.session, api.base + FEED, MEMBER):
        async with open_feed(api.session, api.base + FEED, MEMBER):
            await _wait_held(api, OWN, 2)
            refused = await api.get(FEED, headers=MEMBER, expect=429)
            assert "open event feeds" in refused.fault()
            async with open_feed(api.session, api.base + FEED, OTHER_MEMBER):
                await _wait_held(api, OTHER, 1)
        # The client went away: its slot is back without any write to notice it.
        await _wait_held(api, OWN, 1)
        async with open_feed(api.session, api.base + FEED, MEMBER):
            await _wait_held(api, OWN, 2)
    await _wait_held(api, OWN, 0)
    await _wait_held(api, OTHER, 0)


async def test_no_event_is_skipped_or_repeated_around_an_open_transaction(
    make_api: MakeApi,
) -> None:
    """A transaction holding a lower position commits after a higher one: the feed waits for
    it and sends both in position order; one that rolls back leaves a hole the feed passes."""
    api = await make_api(auth_strategy="testing", feed={"poll_interval": 0.1})
    lb = await _create_lb(api, MEMBER)
    store = PostgresEventStore(api.app[DB])
    meta = Metadata(actor="test", project_id=OWN)

    async def hold_open(commit: bool) -> list[str]:
        stream = StreamId.loadbalancer(lb["id"])
        async with open_feed(api.session, api.base + FEED, MEMBER) as feed:
            async with api.app[DB].acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    version = await store.stream_version(stream)
                    failover = LoadBalancerFailoverRequested(reason="held")
                    held = await store.append(stream, version, [failover], meta, conn=conn)
                    later = await _create_lb(api, MEMBER)  # a higher position, committed
                    assert await feed.silent_for(0.6)  # the feed waits for the open one
                finally:
                    await (tx.commit() if commit else tx.rollback())
            events = await feed.events(2 if commit else 1)
            assert await feed.silent_for(0.3)
        assert events[-1].data["data"]["loadbalancer"]["id"] == later["id"]
        if commit:
            assert int(events[0].id) == held[0].global_position
        return [e.id for e in events]

    committed = await hold_open(commit=True)
    assert committed == sorted(committed, key=int)
    await hold_open(commit=False)


async def test_keystone_tokens_authenticate_the_feed(make_api: MakeApi, tmp_path: Path) -> None:
    path = tmp_path / "identity.yaml"
    save(path, _identity())
    api = await make_api(auth_strategy="keystone", token_keys=new_token_key(), identity_file=path)
    alice = {"X-Auth-Token": await _token(api, "alice", "alice-pw", DEMO.name)}
    bob = {"X-Auth-Token": await _token(api, "bob", "bob-pw", OTHER_PROJECT.name)}
    lb = await _create_lb(api, alice)
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", alice) as feed:
        (created,) = [e for e in await feed.until_silent(0.5) if e.event != "QuotaUpdated"]
    assert created.data["data"]["loadbalancer"]["id"] == lb["id"]
    assert created.data["metadata"]["project_id"] == DEMO.id
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", bob) as feed:
        assert await feed.silent_for(0.7)
    for headers in ({}, {"X-Auth-Token": "forged"}):
        reply = await api.get(FEED, headers=headers, expect=401)
        assert reply.body["error"]["code"] == 401


async def test_open_feeds_end_when_the_api_shuts_down(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed=FAST)
    async with open_feed(api.session, api.base + FEED, MEMBER) as feed:
        await _wait_held(api, OWN, 1)
        await api.app.shutdown()  # what the runner's cleanup runs first
        with pytest.raises(EOFError):
            await feed.next_event(timeout=5.0)
    await _wait_held(api, OWN, 0)


async def test_an_event_of_a_newer_writer_is_sent_as_stored(make_api: MakeApi) -> None:
    """A type this API does not know (written by a newer release) neither ends the admin's
    feed nor reaches a tenant."""
    api = await make_api(auth_strategy="testing", feed=FAST)
    await api.app[DB].execute(
        "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, "
        "data, metadata, occurred_at) VALUES ('loadbalancer-x', 1, gen_random_uuid(), "
        "'FutureThing', 3, '{\"a\": 1}', $1::jsonb, now())",
        json.dumps({"project_id": OWN}),
    )
    lb = await _create_lb(api, MEMBER)
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", ADMIN_ROLE) as feed:
        seen = await feed.until_silent(0.5)
    future = next(e for e in seen if e.event == "FutureThing")
    assert set(future.data) == ENVELOPE_KEYS
    assert (future.data["schema_version"], future.data["data"]) == (3, {"a": 1})
    assert any(e.data["stream_id"] == f"loadbalancer-{lb['id']}" for e in seen)
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", MEMBER) as feed:
        assert "FutureThing" not in {e.event for e in await feed.until_silent(0.5)}


async def test_catch_up_runs_into_live_without_a_gap_or_a_repeat(make_api: MakeApi) -> None:
    """Small pages, appends racing the feed from its first page on: the feed sends exactly
    the project's events of the store, each once, in position order."""
    api = await make_api(auth_strategy="testing", feed={"page_size": 3, "poll_interval": 0.05})
    for _ in range(4):
        await _create_lb(api, MEMBER)
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", MEMBER) as feed:
        for _ in range(4):
            await asyncio.gather(*(_create_lb(api, MEMBER) for _ in range(4)))
        sent = await feed.until_silent(1.0)
    stored = [
        e
        for e in await PostgresEventStore(api.app[DB]).read_all(0, 1000)
        if e.metadata.project_id == OWN
    ]
    assert len(stored) == 20
    assert [int(e.id) for e in sent] == [e.global_position for e in stored]
    assert [e.data["event_id"] for e in sent] == [str(e.event_id) for e in stored]


async def test_security_group_events_reach_their_project_only(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing", feed=FAST)
    body = {"security_group": {"name": "web"}}
    group = (await api.post("/v2.0/security-groups", body, headers=MEMBER, expect=201)).body
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", MEMBER) as feed:
        (created,) = [e for e in await feed.until_silent(0.5) if e.event != "QuotaUpdated"]
    assert created.event == "SecurityGroupCreated"
    assert created.data["data"]["id"] == group["security_group"]["id"]
    async with open_feed(api.session, f"{api.base}{FEED}?after=0", OTHER_MEMBER) as feed:
        assert await feed.silent_for(0.7)
