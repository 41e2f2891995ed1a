"""A child's create under a load balancer the API knows finds its parent on the LB's load (the
repository's known state says which LB holds the parent), reads no view row, and decides on
that load; whatever the load does not place is looked up in the views as before."""

from __future__ import annotations

from typing import Any

from services.api.domain.kinds import Kind
from services.api.http.deps import VIEWS
from tests.integration.api.conftest import Api, MakeApi


def spy_lookups(api: Api) -> list[str]:
    """The kinds of every view row the API looks up from now on."""
    views = api.app[VIEWS]
    looked: list[str] = []
    get = views.get

    async def spied(kind: Kind, resource_id: str) -> Any:
        looked.append(kind.key)
        return await get(kind, resource_id)

    views.get = spied  # type: ignore[method-assign]
    return looked


async def test_creates_under_a_known_lb_find_their_parents_on_its_load(make_api: MakeApi) -> None:
    api = await make_api()
    lb_id = (await api.create_lb())["id"]
    looked = spy_lookups(api)

    listener = await api.create_listener(lb_id)
    pool = await api.create(
        "pools",
        "pool",
        {"listener_id": listener["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
    )
    await api.settle(lb_id)
    member = {"address": "127.0.0.9", "protocol_port": 8080}
    await api.create(f"pools/{pool['id']}/members", "member", member)
    await api.settle(lb_id)
    monitor = {"pool_id": pool["id"], "type": "HTTP", "delay": 2, "timeout": 1, "max_retries": 2}
    await api.create("healthmonitors", "healthmonitor", monitor)
    await api.settle(lb_id)
    policy = await api.create(
        "l7policies", "l7policy", {"listener_id": listener["id"], "action": "REJECT"}
    )
    await api.settle(lb_id)
    rule = {"type": "PATH", "compare_type": "STARTS_WITH", "value": "/x"}
    await api.create(f"l7policies/{policy['id']}/rules", "rule", rule)
    await api.settle(lb_id)
    assert looked == []

    # Another replica knows nothing of the LB: it looks the parent up in the views.
    other = await make_api()
    looked_there = spy_lookups(other)
    second = {"address": "127.0.0.10", "protocol_port": 8080}
    await other.create(f"pools/{pool['id']}/members", "member", second)
    assert looked_there == ["pools"]
    await api.settle(lb_id)

    # A parent deleted since: the LB's load does not place it, and the answers are the views'
    # (those of a replica that never knew the LB).
    await api.delete(f"/v2/lbaas/pools/{pool['id']}", expect=204)
    await api.settle(lb_id)
    looked.clear()
    stranger = await make_api()
    third = {"address": "127.0.0.11", "protocol_port": 8080}
    for path, body in (
        (f"/v2/lbaas/pools/{pool['id']}/members", {"member": third}),
        ("/v2/lbaas/healthmonitors", {"healthmonitor": monitor}),
    ):
        reply, expected = await api.post(path, body), await stranger.post(path, body)
        assert reply.status == expected.status == 404
        assert reply.body == expected.body
    assert looked == ["pools", "pools"]
