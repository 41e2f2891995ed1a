"""Events own their schema: the mapping to the domain cannot drift unnoticed, and events that
an earlier version wrote (fixtures/events_v1.json, written by that version) still decode and
fold to the state that version reached."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from libs.common.domain import stored
from libs.common.domain.amphora import fold_amphora
from libs.common.domain.evolve import fold
from libs.common.domain.model import Listener, Pool, SessionPersistence
from libs.common.events import Event, registry
from libs.common.events import availability_zone as az_ev
from libs.common.events import flavor as flavor_ev
from libs.common.events import loadbalancer as ev
from libs.common.events import quota as quota_ev
from services.api.domain import catalog, quota_limits
from tests import builders

V1 = json.loads((Path(__file__).parent / "fixtures" / "events_v1.json").read_text())
NOW = datetime(2026, 1, 2, tzinfo=UTC)


def _decode(samples: list[dict[str, Any]]) -> list[Event]:
    return [registry().decode(s["event_type"], s["schema_version"], s["data"]) for s in samples]


@pytest.mark.parametrize("model", list(stored.TABLES), ids=lambda m: m.__name__)
def test_each_field_map_covers_its_model_and_its_stored_types(model: type) -> None:
    fields, snapshot_type, changes_type = stored.TABLES[model]
    assert set(fields) == set(model.model_fields), "domain field without a stored name"
    assert set(fields.values()) == set(snapshot_type.model_fields)
    assert set(changes_type.model_fields) == set(fields.values()) - stored.UNCHANGEABLE


def test_the_nested_session_persistence_map_covers_both_sides() -> None:
    assert set(stored.SESSION_PERSISTENCE) == set(SessionPersistence.model_fields)
    snapshot_fields = set(ev.SessionPersistenceSnapshot.model_fields)
    assert set(stored.SESSION_PERSISTENCE.values()) == snapshot_fields


def test_a_resource_survives_its_snapshot() -> None:
    lb = builders.loadbalancer("127.77.0.1", tags=("a",), vip_sg_ids=("x",))
    pool = builders.pool(lb, session_persistence={"type": "APP_COOKIE", "cookie_name": "c"})
    listener = builders.listener(lb, 80, default_pool_id=pool.id, insert_headers={"X": "1"})
    for resource in (lb, pool, listener, builders.member(pool, 80), builders.healthmonitor(pool)):
        assert stored.restored(type(resource), stored.snapshot(resource)) == resource


def test_only_the_fields_an_update_set_are_stored_and_applied() -> None:
    given = {"name": "x", "default_pool_id": None, "not_a_field": 1, "updated_at": NOW}
    changes = stored.changes(Listener, given)
    event = ev.ListenerUpdated(listener_id="l1", changes=changes, updated_at=NOW)
    data = event.model_dump(mode="json")
    assert data["changes"] == {"name": "x", "default_pool_id": None}
    decoded = registry().decode("ListenerUpdated", 2, data)
    assert isinstance(decoded, ev.ListenerUpdated)
    assert stored.applied(Listener, decoded.changes) == {"name": "x", "default_pool_id": None}
    assert "name" in decoded.changes and "protocol" not in decoded.changes


def test_nested_changes_map_both_ways() -> None:
    given = {"session_persistence": {"type": "SOURCE_IP"}}
    changes = stored.changes(Pool, given)
    assert changes.model_dump(mode="json")["session_persistence"]["type"] == "SOURCE_IP"
    applied = stored.applied(Pool, changes)
    assert applied["session_persistence"]["type"] == "SOURCE_IP"


def test_a_v1_update_is_upcast_with_its_time_beside_the_changes() -> None:
    data = {"member_id": "m1", "changes": {"weight": 3, "updated_at": "2026-01-02T00:00:00Z"}}
    decoded = registry().decode("MemberUpdated", 1, data)
    assert isinstance(decoded, ev.MemberUpdated)
    assert decoded.updated_at == NOW
    assert decoded.changes.given() == {"weight": 3}


def test_v1_load_balancer_events_fold_to_the_state_v1_reached() -> None:
    live = fold(_decode(V1["loadbalancer_stream"]))
    assert live.model_dump(mode="json") == V1["loadbalancer_state"]
    deleted = fold(_decode(V1["loadbalancer_deletion"]), live)
    assert deleted.model_dump(mode="json") == V1["loadbalancer_state_deleted"]


def test_events_whose_version_did_not_change_write_what_v1_wrote() -> None:
    samples = [*V1["loadbalancer_stream"], *V1["catalog"]]
    unchanged = [s for s in samples if registry().types()[s["event_type"]].schema_version == 1]
    assert {s["event_type"] for s in unchanged} >= {"LoadBalancerCreated", "PoolCreated"}
    for sample, event in zip(unchanged, _decode(unchanged), strict=True):
        assert event.model_dump(mode="json") == sample["data"], sample["event_type"]


def test_v1_catalog_updates_fold_as_before() -> None:
    events = _decode(V1["catalog"])
    flavor = catalog.fold(
        catalog.FLAVORS, [e for e in events if isinstance(e, flavor_ev.FlavorEvent)]
    )
    assert flavor.body is not None and flavor.body["name"] == "g" and not flavor.body["enabled"]
    zone = catalog.fold(
        catalog.AVAILABILITY_ZONES,
        [e for e in events if isinstance(e, az_ev.AvailabilityZoneEvent)],
    )
    assert zone.body is not None and zone.body["description"] == "x"


def test_catalog_changes_types_cover_what_may_change() -> None:
    for section in catalog.SECTIONS:
        changes_type = section.updated.model_fields["changes"].annotation
        assert isinstance(changes_type, type)
        assert set(changes_type.model_fields) == section.mutable, section.label


def test_quota_limits_name_every_quota_resource() -> None:
    assert set(quota_ev.QuotaLimits.model_fields) == set(quota_limits.QUOTA_RESOURCES)
    event = quota_ev.QuotaUpdated(project_id="p", limits={"pool": None, "member": 3})
    assert event.model_dump(mode="json")["limits"] == {"pool": None, "member": 3}


def test_a_v1_amphora_boot_without_a_host_decodes_and_folds_to_no_host() -> None:
    data = {
        "amphora_id": "a-1",
        "driver": "netns",
        "compute_id": "fa-a1",
        "agent_url": "https://198.18.32.2:9443",
        "lb_network_ip": "198.18.32.2",
        "loadbalancer_id": "lb-1",
        "role": "MASTER",
        "vrrp_ip": None,
        "ha_ip": None,
        "cert_expiration": None,
        "topology": "ACTIVE_STANDBY",
    }
    event = registry().decode("AmphoraBooted", 1, data)
    assert fold_amphora([event]).host == ""
    assert event.model_dump(mode="json") == {**data, "host": ""}
