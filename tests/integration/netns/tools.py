"""Programs that run inside a test's client namespace (``ip netns exec``): HTTP backends that
answer their name, a prober that sends one request every ``interval`` and records each, and
a forger of VRRPv3 adverts (a host of the VIP network posing as a router of a pair).

    python -m tests.integration.netns.tools serve --address A --port P --name N [...]
    python -m tests.integration.netns.tools probe --url U --out FILE --stop-file F [...]
    python -m tests.integration.netns.tools get --url U --count N
    python -m tests.integration.netns.tools advertise --source S --to A [--to B] --vrid V
        --priority P --address VIP [--interval SECONDS] [--count N]

``serve`` prints ``ready`` once every port listens. ``probe`` stops when the stop file appears
or after ``--max-seconds`` and writes its samples as JSON: ``[[start, end, ok, body], ...]``
with times from CLOCK_MONOTONIC (comparable with ``time.monotonic()`` of any process on this
host). Also imported by bench/bench_failover.py for the outage arithmetic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

Sample = tuple[float, float, bool, str]


# -- backends --------------------------------------------------------------------------------


async def _serve(address: str, ports: list[int], names: list[str]) -> None:
    servers = []
    for port, name in zip(ports, names, strict=True):
        body = name.encode()

        async def answer(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes = body
        ) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        servers.append(await asyncio.start_server(answer, address, port, reuse_address=True))
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- client ----------------------------------------------------------------------------------


def http_get(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """One HTTP/1.0 GET on a new connection; (answered 200, body or error)."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            chunks = []
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, "timeout"
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        return False, type(exc).__name__
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    ok = head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
    return ok, body.decode(errors="replace")[:64]


def _probe(
    url: str, interval: float, timeout: float, max_seconds: float, stop: Path, out: Path
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    samples: list[Sample] = []
    started = time.monotonic()
    next_at = started
    while time.monotonic() - started < max_seconds and not stop.exists():
        begin = time.monotonic()
        ok, body = http_get(host, port, timeout)
        samples.append((begin, time.monotonic(), ok, body))
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()
    temporary = out.with_suffix(".tmp")
    temporary.write_text(json.dumps(samples))
    os.replace(temporary, out)


# -- outage arithmetic (pure) ----------------------------------------------------------------


# What tests hold an ACTIVE_STANDBY LB's client-visible outage to when an amphora or its host
# is lost (the goal, 0.5 s, is a benchmark figure: bench_failover.py, bench_host_loss.py).
AS_OUTAGE_BOUND = 1.0


@dataclass(frozen=True)
class Outage:
    """What a client saw around an event at ``since``: the longest time without a successful
    answer (between two successful completions), when answers came back, and counts."""

    longest_gap: float
    recovered_after: float | None
    failures: int
    successes: int


def outage(samples: list[Sample], since: float) -> Outage:
    """Gaps are measured between successful completions from the last success before
    ``since`` onwards; ``recovered_after`` is the first success after the first failure that
    followed ``since``, relative to ``since`` (0 when nothing failed)."""
    relevant = [s for s in samples if s[1] >= since]
    before = [s for s in samples if s[1] < since and s[2]]
    last_ok = before[-1][1] if before else since
    longest, failures, successes = 0.0, 0, 0
    first_failure: float | None = None
    recovered: float | None = None
    for begin, end, ok, _ in relevant:
        if ok:
            successes += 1
            longest = max(longest, end - last_ok)
            last_ok = end
            if first_failure is not None and recovered is None:
                recovered = end - since
        else:
            failures += 1
            if first_failure is None:
                first_failure = begin
    if first_failure is None:
        recovered = 0.0
    return Outage(longest, recovered, failures, successes)


# -- forged VRRP adverts ------------------------------------------------------------------------

VRRP_PROTOCOL = 112


def _checksum(data: bytes) -> int:
    """The Internet checksum (one's complement of the one's complement sum of 16-bit words)."""
    if len(data) % 2:
        data += b"\0"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def vrrp_advert(
    source: str, target: str, vrid: int, priority: int, interval: float, addresses: list[str]
) -> bytes:
    """A VRRPv3 advertisement (RFC 5798) over IPv4 from ``source`` to ``target``, its checksum
    over the IPv4 pseudo-header as keepalived checks it."""
    body = struct.pack(
        "!BBBBHH", 0x31, vrid, priority, len(addresses), round(interval * 100) & 0x0FFF, 0
    ) + b"".join(socket.inet_aton(a) for a in addresses)
    pseudo = socket.inet_aton(source) + socket.inet_aton(target)
    pseudo += struct.pack("!BBH", 0, VRRP_PROTOCOL, len(body))
    return body[:6] + struct.pack("!H", _checksum(pseudo + body)) + body[8:]


def _advertise(
    source: str,
    targets: list[str],
    vrid: int,
    priority: int,
    addresses: list[str],
    interval: float,
    count: int,
) -> None:
    """``count`` adverts to each target, ``interval`` apart, with TTL 255 as a router sends."""
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, VRRP_PROTOCOL) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        sock.bind((source, 0))
        adverts = [
            (vrrp_advert(source, target, vrid, priority, interval, addresses), target)
            for target in targets
        ]
        for _ in range(count):
            for packet, target in adverts:
                sock.sendto(packet, (target, 0))
            time.sleep(interval)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tools")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("--address", required=True)
    serve.add_argument("--port", type=int, action="append", required=True)
    serve.add_argument("--name", action="append", required=True)
    probe = commands.add_parser("probe")
    probe.add_argument("--url", required=True)
    probe.add_argument("--interval", type=float, default=0.01)
    probe.add_argument("--timeout", type=float, default=0.1)
    probe.add_argument("--max-seconds", type=float, default=60.0)
    probe.add_argument("--stop-file", type=Path, required=True)
    probe.add_argument("--out", type=Path, required=True)
    get = commands.add_parser("get")
    get.add_argument("--url", required=True)
    get.add_argument("--count", type=int, default=10)
    get.add_argument("--timeout", type=float, default=1.0)
    advertise = commands.add_parser("advertise")
    advertise.add_argument("--source", required=True)
    advertise.add_argument("--to", action="append", required=True)
    advertise.add_argument("--vrid", type=int, required=True)
    advertise.add_argument("--priority", type=int, required=True)
    advertise.add_argument("--address", action="append", required=True)
    advertise.add_argument("--interval", type=float, default=0.1)
    advertise.add_argument("--count", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(_serve(args.address, args.port, args.name))
    elif args.command == "probe":
        _probe(args.url, args.interval, args.timeout, args.max_seconds, args.stop_file, args.out)
    elif args.command == "advertise":
        _advertise(
            args.source,
            args.to,
            args.vrid,
            args.priority,
            args.address,
            args.interval,
            args.count,
        )
    else:
        parts = urlsplit(args.url)
        seen: Counter[str] = Counter()
        for _ in range(args.count):
            ok, body = http_get(parts.hostname or "", parts.port or 80, args.timeout)
            seen[body if ok else f"error:{body}"] += 1
        json.dump(dict(seen), sys.stdout)


if __name__ == "__main__":
    main()
