"""The bus consumers' metrics: how long an event waited between its append and its fetch
(``event_consume_lag_seconds``, from the envelope's ``occurred_at``), redeliveries seen
(``consumer_redeliveries_total``: messages fetched with ``num_delivered > 1``), and JetStream's
view at scrape time (``consumer_pending_messages``, ``consumer_ack_pending_messages``,
``consumer_redelivered_messages``), all labelled by consumer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import datetime

from nats.aio.msg import Msg
from prometheus_client.core import GaugeMetricFamily, Metric

from libs.common.bus import ConsumerRunner
from libs.common.metrics import LAG_BUCKETS, Metrics

log = logging.getLogger(__name__)


def _occurred_at(msg: Msg) -> float | None:
    try:
        return datetime.fromisoformat(json.loads(msg.data)["occurred_at"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return None  # undecodable: the runner dead-letters it


def count_fetches(metrics: Metrics, runner: ConsumerRunner) -> None:
    """Observe every message ``runner`` fetches: its lag and whether it is a redelivery."""
    lag = metrics.histogram(
        "event_consume_lag_seconds",
        "Seconds from an event's append (occurred_at) to its fetch by a consumer.",
        ["consumer"],
        LAG_BUCKETS,
    )
    redeliveries = metrics.counter(
        "consumer_redeliveries_total",
        "Messages a consumer fetched that JetStream had delivered before.",
        ["consumer"],
    )
    name = runner.name

    def observe(msg: Msg) -> None:
        occurred = _occurred_at(msg)
        if occurred is not None:
            lag.labels(name).observe(max(0.0, time.time() - occurred))
        if (msg.metadata.num_delivered or 1) > 1:
            redeliveries.labels(name).inc()

    runner.on_fetched = observe


def scrape_consumers(metrics: Metrics, runners: Sequence[ConsumerRunner]) -> None:
    """Read the JetStream state of ``runners`` at each scrape (the sequence is read then:
    runners appended later are included)."""

    async def consumers() -> Iterable[Metric]:
        pending = GaugeMetricFamily(
            f"{metrics.namespace}_consumer_pending_messages",
            "Messages of the stream the consumer has not been delivered yet.",
            labels=["consumer"],
        )
        ack_pending = GaugeMetricFamily(
            f"{metrics.namespace}_consumer_ack_pending_messages",
            "Messages delivered to the consumer and not acknowledged yet.",
            labels=["consumer"],
        )
        redelivered = GaugeMetricFamily(
            f"{metrics.namespace}_consumer_redelivered_messages",
            "Messages delivered more than once and not acknowledged yet.",
            labels=["consumer"],
        )
        for runner in runners:
            try:
                info = await runner.info()
            except Exception as exc:  # not attached: no sample rather than no scrape
                log.debug("consumer %s: no info for metrics: %s", runner.name, exc)
                continue
            pending.add_metric([runner.name], float(info.num_pending or 0))
            ack_pending.add_metric([runner.name], float(info.num_ack_pending or 0))
            redelivered.add_metric([runner.name], float(info.num_redelivered or 0))
        return [pending, ack_pending, redelivered]

    metrics.scraped(consumers)
