"""``fulcrum events tail``: follow the event stream live, from any position, as JSON lines.

It uses an ephemeral ordered consumer, so it never disturbs the services' durable consumers.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
from nats.js import api

from libs.common import subjects


@dataclass(frozen=True)
class TailOptions:
    nats_url: str | None = None
    state_dir: str = ".state"
    subjects: list[str] = field(default_factory=list)
    from_start: bool = False
    from_seq: int | None = None
    last: int | None = None
    count: int | None = None


def _resolve_url(options: TailOptions) -> str:
    if options.nats_url:
        return options.nats_url
    if os.environ.get("FULCRUM_NATS_URL"):
        return os.environ["FULCRUM_NATS_URL"]
    url_file = Path(options.state_dir) / "nats.url"
    if url_file.exists():
        return url_file.read_text().strip()
    return "nats://127.0.0.1:4222"


def _deliver(options: TailOptions, last_seq: int) -> tuple[api.DeliverPolicy, int | None]:
    if options.from_start:
        return api.DeliverPolicy.ALL, None
    if options.from_seq is not None:
        return api.DeliverPolicy.BY_START_SEQUENCE, options.from_seq
    if options.last is not None:
        return api.DeliverPolicy.BY_START_SEQUENCE, max(1, last_seq - options.last + 1)
    return api.DeliverPolicy.NEW, None


async def tail_events(options: TailOptions) -> int:
    """Print each event as one JSON line (with its stream sequence); returns an exit code."""
    url = _resolve_url(options)
    try:
        nc = await nats.connect(url, connect_timeout=3, max_reconnect_attempts=-1)
    except (OSError, nats.errors.Error) as exc:
        print(f"fulcrum events tail: cannot reach NATS at {url}: {exc}", file=sys.stderr)
        return 2
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.STREAM_NAME)
        policy, start = _deliver(options, info.state.last_seq)
        config = api.ConsumerConfig(
            deliver_policy=policy,
            opt_start_seq=start,
            filter_subjects=options.subjects or [subjects.ALL_EVENTS],
        )
        sub = await js.subscribe(
            "", stream=subjects.STREAM_NAME, ordered_consumer=True, config=config
        )
        seen = 0
        while options.count is None or seen < options.count:
            try:
                msg = await sub.next_msg(timeout=3600)
            except nats.errors.TimeoutError:
                continue
            body = json.loads(msg.data)
            body["stream_sequence"] = msg.metadata.sequence.stream
            print(json.dumps(body), flush=True)
            seen += 1
        return 0
    except asyncio.CancelledError:
        return 0
    finally:
        await nc.close()
