"""The table of child kinds covers every place a kind must appear, so adding one is one edit."""

from __future__ import annotations

import dataclasses

from libs.common.domain import commands as c
from libs.common.domain.kinds import CHILD_KINDS
from libs.common.domain.model import LoadBalancerState
from libs.common.events import loadbalancer as ev
from libs.common.readmodel import VIEW_TABLES
from services.api.domain.kinds import KINDS
from services.api.http.resources.children import ROUTES

KEYS = [kind.key for kind in CHILD_KINDS]


def test_every_state_collection_is_a_kind_and_back() -> None:
    collections = [
        name
        for name in LoadBalancerState.model_fields
        if name not in ("loadbalancer", "amphora_ids", "version", "status_version")
    ]
    assert collections == KEYS


def test_a_tree_create_carries_every_kind() -> None:
    command_fields = [f.name for f in dataclasses.fields(c.CreateLoadBalancer)]
    assert command_fields == ["loadbalancer", *KEYS]
    assert list(ev.LoadBalancerCreated.model_fields) == ["loadbalancer", *KEYS]


def test_each_kind_names_its_events_and_model() -> None:
    for kind in CHILD_KINDS:
        assert kind.parent_field in kind.model.model_fields
        assert kind.snapshot_attr in kind.created.model_fields
        assert kind.id_attr in kind.updated.model_fields
        assert kind.id_attr in kind.deleted.model_fields
        assert VIEW_TABLES[kind.key] == kind.view_table


def test_the_api_serves_every_kind_from_the_domain_table() -> None:
    for kind in CHILD_KINDS:
        api_kind = KINDS[kind.key]
        assert api_kind.child is kind and api_kind.label == kind.label
    assert [r.kind.child for r in ROUTES] == list(CHILD_KINDS)
