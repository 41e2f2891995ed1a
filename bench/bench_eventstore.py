"""Foundation benchmark: append throughput and append-to-consumer latency.

Starts its own Postgres and NATS (embedded, loopback), then measures
- appended events/s to one stream and spread over 100 streams (concurrent writers),
- latency from append (commit) to a durable consumer's handler, through the outbox relay and
  JetStream, p50/p99 over a bounded number of events.
Goals on a 2-core box: >= 3,000 events/s; p50 append-to-consumer <= 10 ms.
Run: .venv/bin/python bench/bench_eventstore.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg

from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres, create_database
from libs.common import bus, subjects
from libs.common.database import create_pool
from libs.common.events import Envelope, Metadata
from libs.common.events.amphora import AmphoraDeleted
from libs.common.eventstore import PostgresEventStore
from libs.common.outbox import OutboxRelay
from libs.common.schema import upgrade
from libs.common.settings import NatsSettings, PostgresSettings, RelaySettings

META = Metadata(actor="bench")


async def append_throughput(
    store: PostgresEventStore, streams: int, total: int, batch: int = 1
) -> float:
    """Events/s with ``streams`` concurrent writers, ``batch`` events per append."""
    appends = total // streams // batch
    events = [AmphoraDeleted(amphora_id="x")] * batch

    async def writer(s: int) -> None:
        for n in range(appends):
            await store.append(f"amphora-b{streams}x{batch}-{s}", n * batch, events, META)

    start = time.perf_counter()
    await asyncio.gather(*(writer(s) for s in range(streams)))
    return appends * batch * streams / (time.perf_counter() - start)


async def consumer_latency(
    pool: asyncpg.Pool, dsn: str, settings: NatsSettings, count: int
) -> list[float]:
    nc = await bus.connect(settings, "bench")
    js = nc.jetstream()
    await bus.ensure_stream(js, settings)
    store = PostgresEventStore(pool)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def handler(envelope: Envelope, conn: asyncpg.Connection) -> None:
        started = sent.get(str(envelope.event_id))
        if started is None:
            return  # not one of the measured events
        latencies.append(time.perf_counter() - started)
        if len(latencies) >= count:
            done.set()

    await pool.execute("DELETE FROM outbox")  # the throughput phase's rows are not measured
    relay = OutboxRelay(dsn, bus.JetStreamPublisher(js, settings), RelaySettings())
    spec = bus.ConsumerSpec("bench-latency", [subjects.ALL_EVENTS], handler, deliver_new_only=True)
    runner = bus.ConsumerRunner(js, pool, spec, settings)
    await runner.ensure_consumer()
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(runner.run())]
    await asyncio.sleep(1.0)
    for i in range(count):
        before = time.perf_counter()
        stored = await store.append(f"amphora-lat-{i}", 0, [AmphoraDeleted(amphora_id="y")], META)
        sent[str(stored[0].event_id)] = before
        await asyncio.sleep(0.01)  # one event at a time: latency, not queueing
    await asyncio.wait_for(done.wait(), 60)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await nc.close()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fulcrum-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        nats_server = EmbeddedNats(Path(tmp) / "nats")
        try:
            admin = pg.start()
            url = nats_server.start()
            dsn = await create_database(admin, "bench")
            pool = await create_pool(PostgresSettings(dsn=dsn, max_pool=20))
            await upgrade(pool)
            store = PostgresEventStore(pool)
            await append_throughput(store, 10, 500)  # warm-up
            single = await append_throughput(store, 1, 2000)
            many = await append_throughput(store, 100, 6000)
            batched = await append_throughput(store, 100, 20000, batch=10)
            lat = await consumer_latency(pool, dsn, NatsSettings(url=url), 300)
            await pool.close()
        finally:
            nats_server.stop()
            pg.stop()
    p50, p99 = pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000
    print("Fulcrum foundation benchmark (2-core box; Postgres fsync off, loopback NATS)")
    print(f"  append, 1 stream (sequential)      : {single:8.0f} events/s")
    print(f"  append, 100 streams (concurrent)   : {many:8.0f} events/s   goal >= 3000")
    print(f"  append, 100 streams, 10 per append : {batched:8.0f} events/s")
    print(
        f"  append -> consumer p50 / p99       : {p50:6.2f} ms / {p99:6.2f} ms   goal p50 <= 10 ms"
    )
    print(f"  ratio 100-stream / goal            : {many / 3000:5.2f}x")
    print(f"  ratio goal / p50 latency           : {10 / p50:5.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
