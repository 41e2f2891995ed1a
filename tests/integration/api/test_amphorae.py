"""Amphorae over real HTTP: list (filters, paging, the LB's project), show, stats, failover,
config push and delete, with the LB's status rules (409) and RBAC. The test stands in for the
provisioner (amphora records, activation) and the health service (listener_stats rows)."""

from __future__ import annotations

import uuid

from libs.common.domain import commands as c
from libs.common.events import amphora as amp_ev
from libs.common.events.loadbalancer import LoadBalancerUpdated
from libs.common.eventstore import PostgresEventStore
from libs.common.repository import AmphoraRepository
from libs.common.service import DB
from tests.integration.api.conftest import PROVISIONER, Api, MakeApi

AMPHORAE = "/v2/octavia/amphorae"
PROJECT = "0123456789abcdef0123456789abcdef"


async def boot(api: Api, lb_id: str | None, role: str = "STANDALONE") -> str:
    amphora_id = str(uuid.uuid4())
    booted = amp_ev.AmphoraBooted(
        amphora_id=amphora_id,
        driver="process",
        compute_id=f"pid-{amphora_id[:8]}",
        agent_url="https://127.0.0.1:1",
        lb_network_ip="127.0.0.1",
        loadbalancer_id=lb_id,
        role=role,
    )
    await AmphoraRepository(PostgresEventStore(api.app[DB])).record(
        amphora_id, [booted], PROVISIONER
    )
    return amphora_id


async def serving_lb(api: Api, **fields: object) -> tuple[str, list[str]]:
    """An ACTIVE LB served by a MASTER and a BACKUP amphora."""
    lb = await api.create_lb(active=False, **fields)
    amps = [await boot(api, lb["id"], "MASTER"), await boot(api, lb["id"], "BACKUP")]
    await api.repo.execute(lb["id"], c.Activate(amphora_ids=tuple(amps)), PROVISIONER)
    return lb["id"], amps


async def test_list_show_and_filters(api: Api) -> None:
    lb_id, (master, backup) = await serving_lb(api, project_id=PROJECT)
    other_lb, _ = await serving_lb(api)
    spare = await boot(api, None)
    listed = (await api.get(AMPHORAE, expect=200)).body
    assert len(listed["amphorae"]) == 5 and listed["amphorae_links"] == []
    shown = (await api.get(f"{AMPHORAE}/{master}", expect=200)).body["amphora"]
    assert shown["id"] == master and shown["loadbalancer_id"] == lb_id
    assert shown["role"] == "MASTER" and shown["status"] == "ALLOCATED"
    for key in ("compute_id", "lb_network_ip", "vrrp_ip", "cert_expiration", "created_at"):
        assert key in shown
    assert "agent_url" not in shown
    by_lb = (await api.get(f"{AMPHORAE}?loadbalancer_id={lb_id}", expect=200)).body["amphorae"]
    assert {a["id"] for a in by_lb} == {master, backup}
    by_project = (await api.get(f"/v2.0/octavia/amphorae?project_id={PROJECT}")).body["amphorae"]
    assert {a["id"] for a in by_project} == {master, backup}
    ready = (await api.get(f"{AMPHORAE}?status=READY", expect=200)).body["amphorae"]
    assert [a["id"] for a in ready] == [spare]
    masters = (await api.get(f"{AMPHORAE}?role=MASTER&fields=id", expect=200)).body["amphorae"]
    assert len(masters) == 2 and all(set(a) == {"id"} for a in masters)
    page = (await api.get(f"{AMPHORAE}?limit=2&sort=created_at:desc", expect=200)).body
    assert len(page["amphorae"]) == 2 and page["amphorae_links"][0]["rel"] == "next"
    seen = [a["id"] for a in page["amphorae"]]
    while page["amphorae_links"] and page["amphorae_links"][-1]["rel"] == "next":
        page = (await api.get(page["amphorae_links"][-1]["href"], expect=200)).body
        seen += [a["id"] for a in page["amphorae"]]
    assert len(seen) == len(set(seen)) == 5
    await api.get(f"{AMPHORAE}?colour=blue", expect=400)
    await api.get(f"{AMPHORAE}?sort=colour:asc", expect=400)
    reply = await api.get(f"{AMPHORAE}/{uuid.uuid4()}", expect=404)
    assert reply.fault().startswith("Amphora ")
    assert other_lb


async def test_stats(api: Api) -> None:
    lb_id, (master, backup) = await serving_lb(api)
    listener = str(uuid.uuid4())
    await api.app[DB].execute(
        "INSERT INTO listener_stats (listener_id, amphora_id, lb_id, bytes_in, bytes_out, "
        "active_connections, total_connections, request_errors) "
        "VALUES ($1, $2, $3, 10, 20, 3, 40, 1)",
        listener,
        master,
        lb_id,
    )
    reply = await api.get(f"{AMPHORAE}/{master}/stats", expect=200)
    assert reply.body == {
        "amphora_stats": [
            {
                "id": master,
                "listener_id": listener,
                "loadbalancer_id": lb_id,
                "bytes_in": 10,
                "bytes_out": 20,
                "active_connections": 3,
                "total_connections": 40,
                "request_errors": 1,
            }
        ]
    }
    assert (await api.get(f"{AMPHORAE}/{backup}/stats", expect=200)).body == {"amphora_stats": []}
    await api.get(f"{AMPHORAE}/{uuid.uuid4()}/stats", expect=404)


async def test_failover(api: Api) -> None:
    lb_id, (master, backup) = await serving_lb(api)
    reply = await api.put(f"{AMPHORAE}/{master}/failover", None, expect=202)
    assert reply.body is None
    state = await api.repo.load(lb_id)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status == "PENDING_UPDATE"
    events = await PostgresEventStore(api.app[DB]).read_stream(f"loadbalancer-{lb_id}")
    assert events[-1].event_type == "LoadBalancerFailoverRequested"
    assert events[-1].payload.model_dump()["amphora_id"] == master
    # The LB is locked until the provisioner is done: another failover is a 409.
    reply = await api.put(f"{AMPHORAE}/{backup}/failover", None, expect=409)
    assert reply.fault() == f"Invalid state PENDING_UPDATE of loadbalancer resource {lb_id}"
    await api.fail(lb_id)  # ERROR accepts a failover
    await api.put(f"{AMPHORAE}/{backup}/failover", None, expect=202)
    await api.put(f"{AMPHORAE}/{uuid.uuid4()}/failover", None, expect=404)
    spare = await boot(api, None)
    reply = await api.put(f"{AMPHORAE}/{spare}/failover", None, expect=409)
    assert "spare" in reply.fault()


async def test_config_push(api: Api) -> None:
    lb_id, (master, _) = await serving_lb(api)
    await api.put(f"{AMPHORAE}/{master}/config", None, expect=202)
    state = await api.repo.load(lb_id)
    assert state.loadbalancer is not None
    assert state.loadbalancer.provisioning_status == "PENDING_UPDATE"
    events = await PostgresEventStore(api.app[DB]).read_stream(f"loadbalancer-{lb_id}")
    assert events[-1].event_type == "LoadBalancerUpdated"
    pushed = events[-1].payload
    assert isinstance(pushed, LoadBalancerUpdated)
    assert pushed.changes.given() == {} and pushed.updated_at is not None
    await api.put(f"{AMPHORAE}/{master}/config", None, expect=409)
    await api.settle(lb_id)
    await api.put(f"{AMPHORAE}/{master}/config", None, expect=202)
    await api.put(f"{AMPHORAE}/{uuid.uuid4()}/config", None, expect=404)


async def test_delete_only_in_error(api: Api) -> None:
    _, (master, _) = await serving_lb(api)
    reply = await api.delete(f"{AMPHORAE}/{master}", expect=409)
    assert reply.fault() == f"Amphora {master} is immutable and cannot be updated."
    broken = await boot(api, None)
    amps = AmphoraRepository(PostgresEventStore(api.app[DB]))
    await amps.record(broken, [amp_ev.AmphoraErrored(amphora_id=broken, reason="x")], PROVISIONER)
    shown = (await api.get(f"{AMPHORAE}/{broken}", expect=200)).body["amphora"]
    assert shown["status"] == "ERROR"
    await api.delete(f"{AMPHORAE}/{broken}", expect=204)
    assert (await amps.load(broken)).status == "DELETED"
    # Deleted amphorae leave the list; a show still finds them until purged.
    listed = (await api.get(AMPHORAE, expect=200)).body["amphorae"]
    assert broken not in {a["id"] for a in listed}
    shown = (await api.get(f"{AMPHORAE}/{broken}", expect=200)).body["amphora"]
    assert shown["status"] == "DELETED"
    await api.delete(f"{AMPHORAE}/{broken}", expect=404)
    await api.delete(f"{AMPHORAE}/{uuid.uuid4()}", expect=404)


async def test_rbac(make_api: MakeApi) -> None:
    api = await make_api(auth_strategy="testing")
    owner = {"X-Project-Id": PROJECT, "X-Roles": "member"}
    admin = {"X-Project-Id": "a" * 32, "X-Roles": "admin"}
    lb = await api.post(
        "/v2/lbaas/loadbalancers",
        {"loadbalancer": {"vip_subnet_id": "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"}},
        headers=owner,
        expect=201,
    )
    lb_id = lb.body["loadbalancer"]["id"]
    amp = await boot(api, lb_id)
    await api.repo.execute(lb_id, c.Activate(amphora_ids=(amp,)), PROVISIONER)
    for method, path in (
        ("GET", AMPHORAE),
        ("GET", f"{AMPHORAE}/{amp}"),
        ("GET", f"{AMPHORAE}/{amp}/stats"),
        ("PUT", f"{AMPHORAE}/{amp}/failover"),
        ("PUT", f"{AMPHORAE}/{amp}/config"),
        ("DELETE", f"{AMPHORAE}/{amp}"),
    ):
        reply = await api.call(method, path, headers=owner, expect=403)
        assert reply.fault() == "Policy does not allow this request to be performed."
    await api.get(AMPHORAE, headers=admin, expect=200)
    await api.put(f"{AMPHORAE}/{amp}/failover", None, headers=admin, expect=202)


async def test_cert_expiration_is_naive_utc_to_the_second(api: Api) -> None:
    """octavia-fidelity 2.G.4: whatever offset the record carries, the API renders
    ``cert_expiration`` like every other timestamp; a filter takes the rendered value."""
    amphora_id = await boot(api, None)
    rotated = amp_ev.AmphoraCertificateRotated(
        amphora_id=amphora_id, cert_expiration="2027-01-05T05:25:35.250000+02:00"
    )
    await AmphoraRepository(PostgresEventStore(api.app[DB])).record(
        amphora_id, [rotated], PROVISIONER
    )
    shown = (await api.get(f"{AMPHORAE}/{amphora_id}", expect=200)).body["amphora"]
    assert shown["cert_expiration"] == "2027-01-05T03:25:35"
    listed = await api.get(f"{AMPHORAE}?cert_expiration=2027-01-05T03:25:35", expect=200)
    assert [a["id"] for a in listed.body["amphorae"]] == [amphora_id]
