"""NATS permissions and TLS (deploy/local/nats_auth.py) against real nats-server nodes: two
nodes with mutual TLS on their routes, every client over TLS verified by the deployment CA.

A service relays events but cannot destroy the stream nor read through consumers it has no
business with; the operator's reader cannot publish an event (NATS refuses it, and the error
surfaces as a log line and a failed publish); an outside subscriber reads the public subjects,
not the internal ones, and can publish nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from deploy.local.nats_auth import (
    EVENTS_READER,
    OUTSIDE_SUBSCRIBER,
    NatsTls,
    permissions_of,
)
from deploy.local.nats_cluster import NatsCluster, RunningNatsCluster
from libs.common import bus, subjects
from libs.common.errors import TransientError
from libs.common.settings import NatsSettings

PUBLIC = f"{subjects.PREFIX}.loadbalancer.lb1.LoadBalancerCreated"
INTERNAL = f"{subjects.PREFIX}.amphora.a1.AmphoraFailed"


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[RunningNatsCluster]:
    """Two nodes whose routes and client ports speak TLS with a deployment CA's certificate."""
    tls = NatsTls.from_deployment_ca(tmp_path / "ca", tmp_path / "nats-tls", "127.0.0.1")
    with NatsCluster(tmp_path / "nats", size=2, tls=tls).run(start_timeout=30.0) as running:
        yield running


async def _connect_raw(
    running: RunningNatsCluster, user: str, node: int, errors: list[str]
) -> NatsClient:
    """A plain nats-py client of ``user`` on one node, collecting the server's errors."""
    credentials = running.cluster.credentials_for(user)
    tls = running.cluster.tls
    assert tls is not None
    context = ssl.create_default_context(cafile=str(tls.ca_file))

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        running.urls[node],
        user=credentials.user,
        password=credentials.password,
        tls=context,
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=3,
    )


def _reported(errors: list[str], refusal: str) -> bool:
    """The server reported ``refusal`` (nats-py lowercases the server's errors)."""
    return any(refusal.lower() in error for error in errors)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _publish_once_the_stream_answers(
    publisher: bus.JetStreamPublisher, subject: str, body: bytes, event_id: str
) -> bus.Published:
    """Publish, again while the node has no responder yet: a new stream's interest takes a
    moment to cross the route to the other node (the relay retries that TransientError too)."""
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        try:
            return await publisher.publish(subject, body, event_id)
        except TransientError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_every_user_has_allow_lists_and_only_services_publish_events() -> None:
    for user in ("api", "provisioner", "health", "housekeeping"):
        granted = permissions_of(user)
        assert subjects.ALL_EVENTS in granted.publish
        assert granted.subscribe == (subjects.INBOXES,)
        assert not any("DELETE" in s or "PURGE" in s for s in granted.publish)
    assert not any("CONSUMER" in s for s in permissions_of("health").publish)
    assert subjects.ALL_EVENTS not in permissions_of(EVENTS_READER).publish
    assert permissions_of(OUTSIDE_SUBSCRIBER).publish == ()
    assert permissions_of(OUTSIDE_SUBSCRIBER).subscribe == tuple(subjects.public_events())
    with pytest.raises(KeyError):
        permissions_of("intruder")


async def test_services_relay_over_tls_but_cannot_destroy_or_consume_what_is_not_theirs(
    tls_cluster: RunningNatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = tls_cluster.cluster
    settings = cluster.settings_for("api")
    assert all(url.startswith("tls://") for url in settings.servers)
    api_nc = await bus.connect(settings, "api")
    try:
        assert api_nc.connected_url is not None and api_nc.connected_url.scheme == "tls"
        js = api_nc.jetstream(timeout=2.0)
        await bus.ensure_stream(js, settings)
        published = await _publish_once_the_stream_answers(
            bus.JetStreamPublisher(js, settings), PUBLIC, b"{}", "e-1"
        )
        assert published.stream_sequence == 1
        for destroy in (js.purge_stream, js.delete_stream):
            with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
                await destroy(subjects.STREAM_NAME)
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await js.add_consumer(
                subjects.STREAM_NAME,
                api.ConsumerConfig(durable_name="api-snoop", ack_policy=api.AckPolicy.EXPLICIT),
            )

        def logged() -> str:
            return caplog.text.lower()  # nats-py lowercases the server's error

        await _until(lambda: "$js.api.stream.delete.fulcrum_events" in logged())
        assert "$js.api.stream.purge.fulcrum_events" in logged()
        assert "$js.api.consumer.durable.create.fulcrum_events.api-snoop" in logged()
        assert "refused this user" in logged() and "permissions violation" in logged()
        info = await js.stream_info(subjects.STREAM_NAME)
        assert info.state.messages == 1, "the stream is intact"
    finally:
        await api_nc.close()

    provisioner = cluster.settings_for("provisioner")
    prov_nc = await bus.connect(provisioner, "provisioner")
    try:
        js = prov_nc.jetstream(timeout=2.0)
        await js.add_consumer(
            subjects.STREAM_NAME,
            api.ConsumerConfig(
                durable_name="provisioner-test",
                filter_subjects=[subjects.ALL_EVENTS],
                ack_policy=api.AckPolicy.EXPLICIT,
            ),
        )
        sub = await js.pull_subscribe_bind(durable="provisioner-test", stream=subjects.STREAM_NAME)
        (msg,) = await sub.fetch(1, timeout=5.0)
        assert msg.subject == PUBLIC
        await msg.ack()
    finally:
        await prov_nc.close()


async def test_a_reader_publishing_an_event_is_refused_by_nats(
    tls_cluster: RunningNatsCluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = tls_cluster.cluster
    writer = cluster.settings_for("health")
    nc = await bus.connect(writer, "health")
    try:
        await bus.ensure_stream(nc.jetstream(timeout=2.0), writer)
    finally:
        await nc.close()
    reader = cluster.settings_for(EVENTS_READER)
    nc = await bus.connect(reader, "forger")
    try:
        js = nc.jetstream(timeout=2.0)
        with pytest.raises(TransientError, match="publish to"):
            await bus.JetStreamPublisher(js, reader).publish(INTERNAL, b"{}", "forged")
        refusal = f'permissions violation for publish to "{INTERNAL.lower()}"'
        await _until(lambda: refusal in caplog.text.lower())
        with caplog.at_level(logging.ERROR, logger="libs.common.bus"):
            assert any("refused this user" in r.getMessage() for r in caplog.records)
        info = await js.stream_info(subjects.STREAM_NAME)
        assert info.state.messages == 0, "nothing forged reached the stream"
    finally:
        await nc.close()


async def test_an_outside_subscriber_reads_public_subjects_only_and_publishes_nothing(
    tls_cluster: RunningNatsCluster,
) -> None:
    cluster = tls_cluster.cluster
    errors: list[str] = []
    outside = await _connect_raw(tls_cluster, OUTSIDE_SUBSCRIBER, 1, errors)
    try:
        received: list[Msg] = []

        async def collect(msg: Msg) -> None:
            received.append(msg)

        for subject in subjects.public_events():
            await outside.subscribe(subject, cb=collect)
        for denied in (INTERNAL, subjects.ALL_EVENTS, ">"):
            await outside.subscribe(denied, cb=collect)
            await _until(functools.partial(_reported, errors, f'subscription to "{denied}"'))
        await outside.flush()

        settings: NatsSettings = cluster.settings_for("housekeeping")
        service = await bus.connect(settings, "housekeeping")  # on node 0: across the route
        try:
            js = service.jetstream(timeout=2.0)
            await bus.ensure_stream(js, settings)
            publisher = bus.JetStreamPublisher(js, settings)
            # Until the subscriber's interest has crossed the route, node 0 forwards nothing,
            # and until the new stream's interest has crossed it, node 0 has no responder for
            # a publish (the relay retries such a TransientError too): both subjects are
            # published again until the public one arrives.
            for attempt in range(50):
                body = json.dumps({"n": attempt}).encode()
                with contextlib.suppress(TransientError):
                    await publisher.publish(INTERNAL, body, f"i{attempt}")
                    await publisher.publish(PUBLIC, body, f"p{attempt}")
                await asyncio.sleep(0.1)
                if received:
                    break
        finally:
            await service.close()
        await asyncio.sleep(0.3)  # an internal event would have arrived by now
        assert received and {m.subject for m in received} == {PUBLIC}

        await outside.publish(PUBLIC, b"forged")
        await outside.flush()
        await _until(functools.partial(_reported, errors, f'publish to "{PUBLIC}"'))
        with pytest.raises((TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await outside.jetstream(timeout=1.0).stream_info(subjects.STREAM_NAME)
    finally:
        await outside.close()
