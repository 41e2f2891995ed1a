"""Pure logic of the catalog and quota aggregates, the amphora provider's profile validation,
subject-safe aggregate ids and the quota RBAC rules: given events, when a command, then events
or an error."""

from __future__ import annotations

import pytest

from libs.common import subjects
from libs.common.domain.model import AmphoraBounds, Topology
from libs.common.errors import Conflict, NotFound, NotImplementedByProvider, ValidationFailed
from libs.common.events import availability_zone as az_ev
from libs.common.events import flavor as flavor_ev
from libs.common.events import quota as quota_ev
from services.api.domain import catalog, providers, quota_limits
from services.api.domain.policy import Action, RequestContext, allowed

FLAVOR = {
    "id": "f1",
    "name": "gold",
    "description": "",
    "enabled": True,
    "flavor_profile_id": "p1",
}


def test_catalog_entry_lifecycle() -> None:
    section = catalog.FLAVORS
    state = catalog.Entry()
    events = catalog.decide(section, "f1", catalog.CreateEntry(FLAVOR), state)
    assert events == [flavor_ev.FlavorCreated(**FLAVOR)]
    state = catalog.fold(section, events)
    assert state.body == FLAVOR and state.version == 1
    with pytest.raises(Conflict):
        catalog.decide(section, "f1", catalog.CreateEntry(FLAVOR), state)
    # Only actual changes are recorded; a change to nothing records nothing.
    update = catalog.UpdateEntry({"name": "gold", "enabled": False})
    events = catalog.decide(section, "f1", update, state)
    assert events == [flavor_ev.FlavorUpdated(id="f1", changes={"enabled": False})]
    state = catalog.evolve(section, state, events[0])
    assert state.body == {**FLAVOR, "enabled": False}
    assert catalog.decide(section, "f1", catalog.UpdateEntry({"enabled": False}), state) == []
    with pytest.raises(TypeError):
        catalog.decide(section, "f1", catalog.UpdateEntry({"flavor_profile_id": "p2"}), state)
    events = catalog.decide(section, "f1", catalog.DeleteEntry(), state)
    state = catalog.evolve(section, state, events[0])
    assert state.body is None and state.version == 3
    for command in (catalog.DeleteEntry(), catalog.UpdateEntry({"name": "x"})):
        with pytest.raises(NotFound, match="Flavor f1 not found."):
            catalog.decide(section, "f1", command, state)
    # A deleted key can be created again on the same stream.
    assert catalog.decide(section, "f1", catalog.CreateEntry(FLAVOR), state)


def test_zones_are_keyed_by_name() -> None:
    section = catalog.AVAILABILITY_ZONES
    body = {"name": "az1", "description": "", "enabled": True, "availability_zone_profile_id": "p"}
    assert section.stream("az1") == "availabilityzone-az1"
    state = catalog.fold(
        section, catalog.decide(section, "az1", catalog.CreateEntry(body), catalog.Entry())
    )
    events = catalog.decide(section, "az1", catalog.UpdateEntry({"description": "d"}), state)
    assert events == [az_ev.AvailabilityZoneUpdated(name="az1", changes={"description": "d"})]
    with pytest.raises(Conflict, match="A availability zone of az1 already exists."):
        catalog.decide(section, "az1", catalog.CreateEntry(body), state)


def test_evolve_ignores_other_sections() -> None:
    state = catalog.fold(catalog.FLAVORS, [flavor_ev.FlavorCreated(**FLAVOR)])
    after = catalog.evolve(catalog.FLAVORS, state, flavor_ev.FlavorProfileDeleted(id="f1"))
    assert after.body == FLAVOR and after.version == 2


def test_quota_aggregate() -> None:
    state = quota_limits.QuotaState()
    with pytest.raises(NotFound, match="^Quotas p not found.$"):
        quota_limits.decide("p", quota_limits.ResetQuota(), state)
    # The first PUT creates the record even when it sets nothing.
    assert quota_limits.decide("p", quota_limits.SetQuota({}), state) == [
        quota_ev.QuotaUpdated(project_id="p", limits={})
    ]
    events = quota_limits.decide("p", quota_limits.SetQuota({"pool": 3, "member": None}), state)
    assert events == [quota_ev.QuotaUpdated(project_id="p", limits={"pool": 3})]
    state = quota_limits.fold(events)
    assert state.stored and state.limits == {"pool": 3}
    assert quota_limits.decide("p", quota_limits.SetQuota({"pool": 3}), state) == []
    state = quota_limits.evolve(state, quota_ev.QuotaUpdated(project_id="p", limits={"pool": None}))
    assert not state.stored
    state = quota_limits.evolve(state, quota_ev.QuotaUpdated(project_id="p", limits={"l7rule": -1}))
    events = quota_limits.decide("p", quota_limits.ResetQuota(), state)
    assert events == [quota_ev.QuotaReset(project_id="p")]
    state = quota_limits.evolve(state, events[0])
    assert state == quota_limits.QuotaState(version=4) and state.exists
    # A reset of a record already at the defaults appends nothing and is no error.
    assert quota_limits.decide("p", quota_limits.ResetQuota(), state) == []
    with pytest.raises(TypeError):
        quota_limits.decide("p", quota_limits.SetQuota({"amphora": 1}), state)


def test_quota_bodies_and_aliases() -> None:
    given = {"load_balancer": 1, "loadbalancer": 2, "health_monitor": 5, "pool": None}
    assert quota_limits.canonical(given) == {"loadbalancer": 2, "healthmonitor": 5, "pool": None}
    defaults = dict.fromkeys(quota_limits.QUOTA_RESOURCES, -1)
    body = quota_limits.quota_body("p", {"loadbalancer": 2}, defaults)
    assert body["loadbalancer"] == body["load_balancer"] == 2 and body["pool"] == -1
    assert body["project_id"] == body["tenant_id"] == "p"
    assert quota_limits.quota_body("p", {"pool": 1})["listener"] is None
    assert list(quota_limits.stored_row({"pool": 1})) == list(quota_limits.QUOTA_RESOURCES)


def test_flavor_data_validation() -> None:
    data = '{"loadbalancer_topology": "ACTIVE_STANDBY"}'
    assert providers.flavor_settings("amphora", data) == {"loadbalancer_topology": "ACTIVE_STANDBY"}
    assert providers.topology_of(data, Topology.SINGLE) is Topology.ACTIVE_STANDBY
    assert providers.topology_of("{}", Topology.SINGLE) is Topology.SINGLE
    with pytest.raises(ValidationFailed, match="is not a valid option for flavor_data"):
        providers.flavor_settings("amphora", "{")
    for bad in (
        '{"loadbalancer_topology": "RING"}',
        '{"loadbalancer_topology": 1}',
        '{"sriov_vip": false}',
        '{"compute_flavor": "m1"}',
        '{"other": "x"}',
        '"text"',
    ):
        with pytest.raises(NotImplementedByProvider):
            providers.flavor_settings("amphora", bad)
    zone = '{"valid_vip_networks": ["n1", "n2"]}'
    assert providers.availability_zone_settings("amphora", zone)["valid_vip_networks"]
    with pytest.raises(NotImplementedByProvider, match="'compute_zone' was unexpected"):
        providers.availability_zone_settings("amphora", '{"compute_zone": "z"}')
    process = providers.DriverAbilities.of("process")
    with pytest.raises(NotImplementedByProvider, match="does not support the ACTIVE_STANDBY"):
        providers.flavor_settings("amphora", data, process)
    assert providers.flavor_settings("amphora", '{"loadbalancer_topology": "SINGLE"}', process)
    assert providers.valid_vip_networks(zone) == frozenset({"n1", "n2"})
    assert providers.valid_vip_networks("{}") is None
    with pytest.raises(NotImplementedByProvider):
        providers.availability_zone_settings("amphora", '{"valid_vip_networks": "n1"}')
    with pytest.raises(ValidationFailed, match="Provider 'x' is not enabled."):
        providers.require_enabled("x")


def test_active_active_amphora_bounds() -> None:
    """Bounds are integers with 1 <= min <= max <= the ceiling, on ACTIVE_ACTIVE only (400
    otherwise); a driver without a distributor refuses the topology (501) after them."""
    abilities = providers.DriverAbilities.of("netns", amphora_ceiling=6)
    aa = '{"loadbalancer_topology": "ACTIVE_ACTIVE", '
    ok = providers.flavor_settings("amphora", aa + '"amphora_min": 2, "amphora_max": 4}', abilities)
    assert ok["amphora_min"] == 2
    bounds = providers.amphora_bounds(aa + '"amphora_min": 2}', Topology.ACTIVE_ACTIVE, 6)
    assert bounds == AmphoraBounds(amphora_min=2, amphora_max=6)
    assert providers.amphora_bounds(None, Topology.ACTIVE_ACTIVE, 6) == AmphoraBounds(
        amphora_min=1, amphora_max=6
    )
    assert providers.amphora_bounds(None, Topology.SINGLE, 6) is None
    for bad, why in (
        (aa + '"amphora_min": 0}', "amphora_min 0 is not an integer from 1 to 6"),
        (aa + '"amphora_max": 7}', "amphora_max 7 is not an integer from 1 to 6"),
        (aa + '"amphora_min": "2"}', 'amphora_min "2" is not an integer'),
        (aa + '"amphora_min": true}', "amphora_min true is not an integer"),
        (aa + '"amphora_min": 2.5}', "amphora_min 2.5 is not an integer"),
        (aa + '"amphora_min": 4, "amphora_max": 3}', "amphora_min 4 is greater than amphora_max 3"),
        ('{"amphora_min": 2}', "only apply to the ACTIVE_ACTIVE"),
        ('{"loadbalancer_topology": "SINGLE", "amphora_max": 2}', "only apply to the ACTIVE_"),
    ):
        with pytest.raises(ValidationFailed, match=why):
            providers.flavor_settings("amphora", bad, abilities)
    refusing = providers.DriverAbilities.of("process")
    with pytest.raises(NotImplementedByProvider, match="does not support the ACTIVE_ACTIVE"):
        providers.flavor_settings("amphora", aa + '"amphora_min": 2}', refusing)
    # The 400s come first.
    with pytest.raises(ValidationFailed):
        providers.flavor_settings("amphora", aa + '"amphora_min": 0}', refusing)
    for driver in ("netns", "docker"):  # the drivers with a distributor
        accepting = providers.DriverAbilities.of(driver)
        given = providers.flavor_settings("amphora", aa + '"amphora_min": 2}', accepting)
        assert given["amphora_min"] == 2, driver
    assert "amphora_max" in providers.FLAVOR_CAPABILITIES


def test_a_flavor_may_set_the_autoscaler_of_its_active_active_load_balancers() -> None:
    aa = '{"loadbalancer_topology": "ACTIVE_ACTIVE", "autoscale": '
    given = aa + '{"cpu_out": 0.5, "cpu_in": 0.1, "cooldown": 30}}'
    assert providers.flavor_settings("amphora", given)["autoscale"]["cpu_out"] == 0.5
    assert providers.autoscale_overrides(given, Topology.ACTIVE_ACTIVE) == {
        "cpu_out": 0.5,
        "cpu_in": 0.1,
        "cooldown": 30.0,
    }
    assert providers.autoscale_overrides(given, Topology.SINGLE) == {}
    assert providers.autoscale_overrides(None, Topology.ACTIVE_ACTIVE) == {}
    for bad, why in (
        (aa + '"fast"}', 'autoscale "fast" is not an object'),
        (aa + '{"speed": 1}}', "autoscale has no setting speed"),
        (aa + '{"sustain": -1}}', "autoscale sustain -1 is not a number >= 0"),
        (aa + '{"sustain": "1"}}', 'autoscale sustain "1" is not a number'),
        (aa + '{"cooldown": true}}', "autoscale cooldown true is not a number"),
        (aa + '{"cpu_in": 0.5, "cpu_out": 0.4}}', "cpu_in 0.5 is not below cpu_out 0.4"),
        ('{"autoscale": {"cpu_out": 1}}', "only apply to the ACTIVE_ACTIVE"),
    ):
        with pytest.raises(ValidationFailed, match=why):
            providers.flavor_settings("amphora", bad)


def test_subject_tokens() -> None:
    uuid = "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"
    assert subjects.subject_token(uuid) == uuid
    assert subjects.subject_token("a.b c*>%é") == "a%2Eb%20c%2A%3E%25%C3%A9"
    subject = subjects.event_subject("availabilityzone-eu.west", "AvailabilityZoneCreated")
    assert subject == "fulcrum.events.availabilityzone.eu%2Ewest.AvailabilityZoneCreated"


def test_quota_policy() -> None:
    def ctx(*roles: str, project: str = "p") -> RequestContext:
        return RequestContext(project_id=project, roles=frozenset(roles))

    assert allowed(ctx("reader"), Action.READ_QUOTA, "p")
    assert not allowed(ctx("reader"), Action.READ_QUOTA, "q")
    assert not allowed(ctx("member"), Action.WRITE_QUOTA, "p")
    assert allowed(ctx("load-balancer_quota_admin"), Action.WRITE_QUOTA, "q")
    assert allowed(ctx("load-balancer_quota_admin"), Action.READ_QUOTA, "q")
    assert not allowed(ctx("load-balancer_quota_admin"), Action.WRITE, "q")
    assert allowed(ctx("admin"), Action.WRITE_QUOTA, "q")
    assert ctx("load-balancer_global_observer").reads_quota_globally
    assert not ctx("member").reads_quota_globally
