"""Follow Fulcrum's live event feed (``GET /v2/fulcrum/events``) and print each event.

A subscriber as docs/events.md's consumer guide describes it, with the standard library only:
it authenticates with a Keystone token (``X-Auth-Token``), prints each event envelope as one
JSON line, remembers the last ``id:`` it saw and, when the connection drops, reconnects with
``Last-Event-ID`` so it misses nothing; it drops an event it has already handled (by
``event_id``), as every at-least-once consumer should.

    python docs/examples/subscribe_feed.py --url https://127.0.0.1:9876 --token "$OS_TOKEN" \
        --cacert .state/ca/ca.pem

``--cacert`` (or ``OS_CACERT``) is the CA that signed the API's certificate (``make up``'s is
``.state/ca/ca.pem``); without it the system's trust store is used.

``--after N`` starts after global position N (0: from the first event); without it the feed
starts with the events committed from now on. ``--count N`` exits after N events;
``--idle-exit S`` exits when S seconds pass without an event.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

FEED_PATH = "/v2/fulcrum/events"
RECONNECT_DELAY = 1.0  # seconds before reconnecting after a dropped connection
READ_TIMEOUT = 30.0  # the feed sends a keepalive at least every 15 s
SEEN_IDS = 10_000  # event ids remembered for deduplication


@dataclass
class Event:
    position: int
    event_type: str
    envelope: dict[str, Any]


def parse_stream(lines: Iterator[bytes]) -> Iterator[Event | None]:
    """SSE events from the response's lines; None for each comment (a keepalive)."""
    fields: dict[str, str] = {}
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith(":"):
            yield None
        elif not line:
            if "data" in fields:
                yield Event(int(fields["id"]), fields["event"], json.loads(fields["data"]))
            fields = {}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def open_feed(url: str, token: str, last_id: int | None, tls: ssl.SSLContext) -> Any:
    """The HTTP response of one connection to the feed; raises HTTPError on 4xx/5xx."""
    headers = {"Accept": "text/event-stream", "X-Auth-Token": token}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    request = urllib.request.Request(url + FEED_PATH, headers=headers)
    return urllib.request.urlopen(request, timeout=READ_TIMEOUT, context=tls)


def follow(args: argparse.Namespace) -> int:
    last_id: int | None = args.after
    seen: OrderedDict[str, None] = OrderedDict()
    printed = 0
    quiet_since = time.monotonic()
    tls = ssl.create_default_context(cafile=args.cacert or None)
    while True:
        try:
            with open_feed(args.url, args.token, last_id, tls) as response:
                for event in parse_stream(response):
                    if args.idle_exit and time.monotonic() - quiet_since > args.idle_exit:
                        return 0
                    if event is None:
                        continue  # a keepalive
                    quiet_since = time.monotonic()
                    last_id = event.position
                    event_id = event.envelope["event_id"]
                    if event_id in seen:
                        continue  # delivered twice: handled already
                    seen[event_id] = None
                    if len(seen) > SEEN_IDS:
                        seen.popitem(last=False)
                    print(json.dumps(event.envelope), flush=True)
                    printed += 1
                    if args.count and printed >= args.count:
                        return 0
        except urllib.error.HTTPError as exc:
            body = exc.read().decode("utf-8", "replace")
            print(f"feed refused: {exc.code} {body}", file=sys.stderr)
            if exc.code != 429 and exc.code < 500:
                return 1  # bad token, bad position, no permission: retrying will not help
        except (OSError, TimeoutError) as exc:
            print(f"feed connection lost ({exc}); resuming after {last_id}", file=sys.stderr)
        if args.idle_exit and time.monotonic() - quiet_since > args.idle_exit:
            return 0
        time.sleep(RECONNECT_DELAY)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("FULCRUM_API_URL", "https://127.0.0.1:9876")
    )
    parser.add_argument("--token", default=os.environ.get("OS_TOKEN", ""))
    parser.add_argument("--cacert", default=os.environ.get("OS_CACERT", ""))
    parser.add_argument("--after", type=int, default=None)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--idle-exit", type=float, default=0.0)
    args = parser.parse_args()
    if not args.token:
        parser.error("a token is needed: --token or OS_TOKEN (openstack token issue)")
    try:
        return follow(args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
