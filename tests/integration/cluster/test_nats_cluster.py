"""A real 3-node JetStream cluster: the event stream at R3 loses nothing and applies nothing
twice when its leader is killed mid-burst, the killed node rejoins, and only the right
credentials get in; and one node serving TLS with client certificates."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from deploy.local.nats_cluster import EVENTS_READER, NatsCluster, NatsTls, RunningNatsCluster
from deploy.local.ports import free_tcp_port
from libs.common import bus, subjects
from libs.common.domain import commands as c
from libs.common.errors import InfrastructureError
from libs.common.events import Metadata
from libs.common.events.tail import TailOptions, tail_events
from libs.common.eventstore import PostgresEventStore
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from libs.common.repository import LoadBalancerRepository
from tests import builders as b
from tests.integration.cluster.nats_fixtures import (  # noqa: F401 (fixtures)
    ServiceProcess,
    active_count,
    amphora_dir,
    lb_create,
    nats_cluster,
    provisioner_environment,
    service_processes,
)
from tests.integration.housekeeping.conftest import eventually
from tests.integration.test_relay_and_consumers import EFFECTS_DDL, Harness

META = Metadata(correlation_id="cluster", actor="test")
CREATES = 50
KILL_AFTER = 20
CONSUMER = "cluster-effects"
PROVISIONED = 8


@pytest.fixture
async def harness(
    db: asyncpg.Pool,
    pg_dsn: str,
    nats_cluster: RunningNatsCluster,  # noqa: F811
) -> AsyncIterator[Harness]:
    """Relay and a durable consumer (recording effects) against the cluster, as the
    provisioner's NATS user (the service with consumers); the stream at R3."""
    await db.execute(EFFECTS_DDL)
    settings = nats_cluster.cluster.settings_for("provisioner", ack_wait=5.0, max_deliver=5)
    nc = await bus.connect(settings, "setup")
    try:
        # Made at R1 first, as a one-node deployment left it: ensure_stream scales it up.
        # The scale-up answers once the new peers are placed; right after the cluster starts,
        # on a loaded box, that took longer than the client's default 5 s once.
        js = nc.jetstream(timeout=30.0)
        await bus.ensure_stream(js, settings.model_copy(update={"replicas": 1}))
        await bus.ensure_stream(js, settings)
    finally:
        await nc.close()
    h = Harness(db, pg_dsn, settings)
    try:
        yield h
    finally:
        await h.close()


def create_command(index: int) -> c.CreateLoadBalancer:
    lb = b.loadbalancer(f"127.77.{index // 200}.{10 + index % 200}")
    pool = b.pool(lb)
    listener = b.listener(lb, 8000 + index, default_pool_id=pool.id)
    members = tuple(b.member(pool, 9000 + n) for n in range(3))
    return c.CreateLoadBalancer(lb, listeners=(listener,), pools=(pool,), members=members)


async def replicas_current(js: JetStreamContext, peers: int) -> bool:
    """The stream has a leader and ``peers`` other replicas, all current."""
    try:
        info = await js.stream_info(subjects.STREAM_NAME)
    except (TimeoutError, nats.errors.Error):
        return False
    cluster = info.cluster
    if cluster is None or not cluster.leader or cluster.replicas is None:
        return False
    return len(cluster.replicas) == peers and all(
        p.current and not p.offline for p in cluster.replicas
    )


async def test_stream_at_r3_loses_nothing_when_its_leader_is_killed(
    harness: Harness,
    nats_cluster: RunningNatsCluster,  # noqa: F811
    db: asyncpg.Pool,
) -> None:
    nc = await bus.connect(harness.settings, "observer")
    try:
        js = nc.jetstream(timeout=2.0)
        info = await js.stream_info(subjects.STREAM_NAME)
        assert info.config.num_replicas == 3
        await eventually(lambda: replicas_current(js, 2), 15.0, "R3 stream with 2 current peers")
        await harness.relay()
        await harness.consumer(CONSUMER)

        async def consumer_at_r3() -> bool:
            try:
                consumer = await js.consumer_info(subjects.STREAM_NAME, CONSUMER)
            except nats.errors.Error:
                return False
            return consumer.cluster is not None and len(consumer.cluster.replicas or []) == 2

        await eventually(consumer_at_r3, 10.0, "the durable consumer at R3")

        repo = LoadBalancerRepository(PostgresEventStore(db))
        leader = ""
        started = time.monotonic()
        for index in range(CREATES):
            command = create_command(index)
            await repo.execute(command.loadbalancer.id, command, META)
            if index + 1 == KILL_AFTER:
                stream = await js.stream_info(subjects.STREAM_NAME)
                assert stream.cluster is not None and stream.cluster.leader
                leader = stream.cluster.leader
                nats_cluster.kill(leader)
            await asyncio.sleep(0.04)  # a steady 25 creates a second
        assert leader, "the leader was killed mid-burst"

        appended = {r["event_id"] for r in await db.fetch("SELECT event_id FROM events")}
        assert len(appended) >= CREATES

        async def all_consumed() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM effects") >= len(appended))

        await eventually(all_consumed, 45.0, f"{len(appended)} events consumed")
        await eventually(lambda: _empty_outbox(db), 10.0, "the outbox drained")
        await asyncio.sleep(1.0)  # a late redelivery would show as a second effect
        effects = [r["event_id"] for r in await db.fetch("SELECT event_id FROM effects")]
        assert len(effects) == len(set(effects)), "an event was applied twice"
        assert set(effects) == appended, "an event was lost"
        burst = time.monotonic() - started

        nats_cluster.restart(leader)
        await eventually(lambda: replicas_current(js, 2), 30.0, f"{leader} current again")

        async def meta_current() -> bool:
            # Only the meta leader knows whether its followers are current.
            meta_leader = nats_cluster.monitor(leader, "jsz")["meta_cluster"].get("leader")
            if not meta_leader:
                return False
            meta = nats_cluster.monitor(meta_leader, "jsz")["meta_cluster"]
            peers = meta.get("replicas", [])
            return bool(
                meta["cluster_size"] == 3
                and meta.get("leader")
                and len(peers) == 2
                and all(p["current"] for p in peers)
            )

        await eventually(meta_current, 30.0, f"{leader} in the meta group, all 3 current")
        routes = nats_cluster.monitor(leader, "routez")["num_routes"]
        assert routes >= 2, f"{leader} has {routes} routes after restart"
        print(f"{len(appended)} events, leader {leader} killed; all consumed in {burst:.1f} s")
    finally:
        await nc.close()


async def _empty_outbox(db: asyncpg.Pool) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM outbox") == 0)


async def test_wrong_credentials_are_refused_and_the_reader_only_reads(
    nats_cluster: RunningNatsCluster,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = nats_cluster.cluster
    assert cluster.tls is not None
    good = cluster.credentials_for("health")
    verified = ssl.create_default_context(cafile=str(cluster.tls.ca_file))
    for user, password in ((good.user, "wrong"), ("intruder", good.password), (None, None)):
        refused = NatsClient()
        try:
            with pytest.raises(nats.errors.Error):
                await refused.connect(
                    cluster.urls,
                    user=user,
                    password=password,
                    tls=verified,
                    allow_reconnect=False,
                    connect_timeout=2,
                )
        finally:
            await refused.close()

    wrong = cluster.settings_for("health", password="wrong")
    with pytest.raises(InfrastructureError, match="refused user 'health'"):
        await asyncio.wait_for(bus.connect(wrong, "wrong"), 5.0)  # at once, no retries

    settings = cluster.settings_for("health")
    nc = await bus.connect(settings, "writer")
    try:
        js = nc.jetstream(timeout=2.0)
        await bus.ensure_stream(js, settings)

        async def published() -> bool:
            """The R3 stream answers once its replicas have elected a leader."""
            try:
                await js.publish(f"{subjects.PREFIX}.amphora.a1.AmphoraDeleted", b"{}")
            except nats.js.errors.NoStreamResponseError:
                return False
            return True

        await eventually(published, timeout=15.0, what="the new stream to take a publish")
    finally:
        await nc.close()

    reader = cluster.credentials_for(EVENTS_READER)
    ca_file = str(cluster.tls.ca_file)
    options = TailOptions(
        nats_url=",".join(cluster.urls),
        user=reader.user,
        password=reader.password,
        tls_ca_file=ca_file,
        from_start=True,
        count=1,
    )
    assert await tail_events(options) == 0
    assert '"stream_sequence": 1' in capsys.readouterr().out
    refused_tail = TailOptions(
        nats_url=",".join(cluster.urls),
        user=reader.user,
        password="wrong",
        tls_ca_file=ca_file,
        connect_timeout=2.0,
    )
    assert await tail_events(refused_tail) == 2
    assert "refused the credentials" in capsys.readouterr().err

    reading = cluster.settings_for(EVENTS_READER)
    nc = await bus.connect(reading, "reader")
    try:
        js = nc.jetstream(timeout=2.0)
        with pytest.raises((TimeoutError, nats.errors.Error)):
            await js.publish(f"{subjects.PREFIX}.amphora.a2.AmphoraDeleted", b"{}")
        info = await js.stream_info(subjects.STREAM_NAME)
        assert info.state.messages == 1
    finally:
        await nc.close()


async def test_tls_with_client_certificates_on_one_node(tmp_path: Path) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")
    files = {}
    for name, issued in (
        ("server", ca.issue_server_cert("nats", ["127.0.0.1"])),
        ("client", ca.issue_client_cert("api")),
    ):
        for part, pem in (("pem", issued.cert_pem), ("key", issued.key_pem)):
            path = tmp_path / f"{name}.{part}"
            write_private_file(path, pem)
            files[f"{name}.{part}"] = path
    tls = NatsTls(files["server.pem"], files["server.key"], ca.cert_path, verify=True)
    cluster = NatsCluster(tmp_path / "nats", size=1, tls=tls)
    assert cluster.urls[0].startswith("tls://")
    with cluster.run(start_timeout=20.0):
        settings = cluster.settings_for(
            "api", tls_cert_file=str(files["client.pem"]), tls_key_file=str(files["client.key"])
        )
        assert settings.replicas == 1 and settings.tls
        nc = await bus.connect(settings, "tls-client")
        try:
            await bus.ensure_stream(nc.jetstream(), settings)
            assert nc.connected_url is not None and nc.connected_url.scheme == "tls"
        finally:
            await nc.close()

        without_certificate = cluster.settings_for("api")
        refused = NatsClient()
        try:
            with pytest.raises((OSError, ssl.SSLError, nats.errors.Error)):
                await refused.connect(
                    **bus.connect_options(without_certificate),
                    allow_reconnect=False,
                    connect_timeout=2,
                )
        finally:
            await refused.close()


async def test_a_provisioner_on_the_cluster_rides_out_the_stream_leader_kill(
    pg_dsn: str,
    db: asyncpg.Pool,
    tmp_path: Path,
    amphora_dir: Path,  # noqa: F811
    nats_cluster: RunningNatsCluster,  # noqa: F811
    service_processes: Callable[..., ServiceProcess],  # noqa: F811
) -> None:
    """A real provisioner given the three URLs and its own credentials (``environment_for``):
    the stream leader killed mid-burst of LB creates, every LB still ends ACTIVE, once."""
    cluster = nats_cluster.cluster
    port = free_tcp_port()
    env = provisioner_environment(pg_dsn, ",".join(cluster.urls), port, tmp_path, amphora_dir)
    env |= {
        f"FULCRUM_PROVISIONER_{k}": v for k, v in cluster.environment_for("provisioner").items()
    }
    provisioner = service_processes("provisioner", env, port)
    await provisioner.wait_ready()

    reader = cluster.settings_for(EVENTS_READER)
    nc = await bus.connect(reader, "observer")
    try:
        js = nc.jetstream(timeout=2.0)
        stream = await js.stream_info(subjects.STREAM_NAME)
        assert stream.config.num_replicas == 3, "the provisioner made the stream at R3"
        repo = LoadBalancerRepository(PostgresEventStore(db))
        lb_ids = []
        leader = ""
        for index in range(PROVISIONED):
            command = lb_create(index)
            await repo.execute(command.loadbalancer.id, command, META)
            lb_ids.append(command.loadbalancer.id)
            if index == PROVISIONED // 2:
                stream = await js.stream_info(subjects.STREAM_NAME)
                assert stream.cluster is not None and stream.cluster.leader
                leader = stream.cluster.leader
                nats_cluster.kill(leader)
            await asyncio.sleep(0.1)

        async def all_active() -> bool:
            return await active_count(db, lb_ids) == len(lb_ids)

        await eventually(all_active, 60.0, f"{len(lb_ids)} LBs ACTIVE")
        owners = await db.fetch(
            "SELECT lb_id, count(*) AS n FROM amphora_view WHERE status <> 'DELETED' "
            "AND lb_id = ANY($1::text[]) GROUP BY lb_id",
            lb_ids,
        )
        assert {r["lb_id"]: r["n"] for r in owners} == dict.fromkeys(lb_ids, 1)
        nats_cluster.restart(leader)
        await eventually(lambda: replicas_current(js, 2), 30.0, f"{leader} current again")
    finally:
        await nc.close()
