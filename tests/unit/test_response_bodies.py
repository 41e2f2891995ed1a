"""The body models of the OpenAPI document (``schemas/views.py``) describe exactly what the read
model writes: every body of a full tree, a single-call create's graph, an amphora and quotas
validate against them, with no attribute missing and none unknown."""

from __future__ import annotations

from datetime import UTC, datetime

from libs.common.domain.amphora import Amphora, AmphoraStatus
from libs.common.readmodel import amphora_body, resource_bodies
from services.api.domain.quota_limits import quota_body
from services.api.http.schemas import views
from services.api.http.writing import full_graph
from tests.unit.test_rendering import StateBuilder

BODY_MODELS = {
    "loadbalancer": views.LOADBALANCER,
    "listeners": views.LISTENER,
    "pools": views.POOL,
    "members": views.MEMBER,
    "healthmonitors": views.HEALTHMONITOR,
    "l7policies": views.L7POLICY,
    "l7rules": views.L7RULE,
}


def tree() -> StateBuilder:
    builder = StateBuilder(vip="127.77.0.10")
    pool = builder.pool("HTTP", listener=builder.listener("HTTP", 80))
    builder.member(pool, "127.0.0.1", 8080)
    builder.monitor(pool, "HTTP")
    policy = builder.policy(
        builder.listener("HTTP", 81), "REDIRECT_TO_POOL", 1, redirect_pool_id=pool
    )
    builder.rule(policy, "PATH", "STARTS_WITH", "/a")
    return builder


def test_every_tree_body_matches_its_model() -> None:
    bodies = resource_bodies(tree().build())
    for kind, model in BODY_MODELS.items():
        assert bodies[kind], kind
        for body in bodies[kind].values():
            # model_validate with extra="forbid" and every field required: exact keys.
            assert model.model_validate(body).model_dump(mode="json").keys() == body.keys()


def test_a_single_call_create_answers_the_graph_model() -> None:
    graph = full_graph(tree().build())
    views.LOADBALANCER_GRAPH.model_validate(graph)
    assert graph["listeners"][0]["l7policies"] == [] and graph["pools"][0]["members"]


def test_amphora_and_quota_bodies_match_their_models() -> None:
    amphora = Amphora(
        id="a", status=AmphoraStatus.ALLOCATED, loadbalancer_id="lb", driver="process"
    )
    views.AMPHORA.model_validate(amphora_body(amphora, datetime.now(UTC), None))
    views.QUOTA.model_validate(quota_body("p", {"loadbalancer": 3}, None))
    views.QUOTA.model_validate(quota_body("p", {}, dict.fromkeys(views.QUOTA.model_fields, 1)))
