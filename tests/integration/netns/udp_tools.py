"""UDP programs for a test's client namespace (``ip netns exec``), stdlib only:

    python -m tests.integration.netns.udp_tools echo --address A --port P --name N
    python -m tests.integration.netns.udp_tools dns --address A --port P --answer IP
    python -m tests.integration.netns.udp_tools ask --host H --port P --count N [--source S] [--first-port P]
        [--dns NAME] [--timeout T]

``echo`` answers every datagram with its name; ``dns`` answers A queries (any name) with one
record ``IP`` (TTL 0) and anything else with NOTIMP; both print ``ready`` once bound. ``ask``
sends ``count`` requests, each from a new socket (a new source port: a new flow for the load
balancer), optionally bound to address ``source``, and prints JSON {answer or "error:<why>": n}
(for --dns the answer is the A record's address).
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import struct
import sys
from collections import Counter


def _bound(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    return sock


def echo(address: str, port: int, name: str) -> None:
    sock = _bound(address, port)
    print("ready", flush=True)
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(name.encode(), peer)


def dns_query(name: str) -> tuple[int, bytes]:
    """(query id, an A query for ``name`` with recursion desired)."""
    ident = secrets.randbelow(65536)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    return ident, struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0\x01\0\x01"


def dns_answer(query: bytes, answer: str) -> bytes:
    """The response to ``query``: one A record ``answer`` for an A/IN question, else NOTIMP."""
    ident, flags = struct.unpack("!HH", query[:4])
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12 : end + 5]
    qtype, qclass = struct.unpack("!HH", query[end + 1 : end + 5])
    if qtype != 1 or qclass != 1:
        return struct.pack("!HHHHHH", ident, 0x8004 | (flags & 0x0100), 1, 0, 0, 0) + question
    header = struct.pack("!HHHHHH", ident, 0x8400 | (flags & 0x0100), 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton(answer)
    return header + question + record


def parse_a(response: bytes, ident: int) -> str:
    """The first A record of a response to query ``ident``."""
    rid, flags, qd, an = struct.unpack("!HHHH", response[:8])
    if rid != ident or flags & 0x000F or an < 1:
        raise ValueError(f"bad response (id {rid}, flags {flags:#x}, answers {an})")
    end = 12
    for _ in range(qd):
        while response[end] != 0:
            end += response[end] + 1
        end += 5
    rdlength = struct.unpack("!H", response[end + 10 : end + 12])[0]
    return socket.inet_ntoa(response[end + 12 : end + 12 + rdlength])


def dns(address: str, port: int, answer: str) -> None:
    sock = _bound(address, port)
    print("ready", flush=True)
    while True:
        query, peer = sock.recvfrom(512)
        try:
            sock.sendto(dns_answer(query, answer), peer)
        except (IndexError, struct.error):
            continue


def ask(
    host: str, port: int, count: int, source: str, name: str, timeout: float, first_port: int
) -> Counter[str]:
    """``count`` requests, each a new flow: from ``first_port``, ``first_port + 1``, ... (0: ports
    the kernel picks, which may be an earlier flow's again)."""
    seen: Counter[str] = Counter()
    for flow in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            if source or first_port:
                sock.bind((source, first_port + flow if first_port else 0))
            try:
                if name:
                    ident, query = dns_query(name)
                    sock.sendto(query, (host, port))
                    seen[parse_a(sock.recv(512), ident)] += 1
                else:
                    sock.sendto(b"who?", (host, port))
                    seen[sock.recv(512).decode(errors="replace")] += 1
            except (OSError, ValueError) as exc:
                seen[f"error:{type(exc).__name__}"] += 1
    return seen


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    serve_echo = sub.add_parser("echo")
    serve_dns = sub.add_parser("dns")
    for serving in (serve_echo, serve_dns):
        serving.add_argument("--address", required=True)
        serving.add_argument("--port", type=int, required=True)
    serve_echo.add_argument("--name", required=True)
    serve_dns.add_argument("--answer", required=True)
    client = sub.add_parser("ask")
    client.add_argument("--host", required=True)
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--count", type=int, default=1)
    client.add_argument("--source", default="")
    client.add_argument("--dns", default="")
    client.add_argument("--timeout", type=float, default=1.0)
    client.add_argument("--first-port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "echo":
        echo(args.address, args.port, args.name)
    elif args.command == "dns":
        dns(args.address, args.port, args.answer)
    else:
        seen = ask(
            args.host, args.port, args.count, args.source, args.dns, args.timeout, args.first_port
        )
        print(json.dumps(dict(seen)))


if __name__ == "__main__":
    main(sys.argv[1:])
