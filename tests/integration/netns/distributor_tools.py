"""Programs for the distributor tests (``ip netns exec``), stdlib only:

    python -m tests.integration.netns.distributor_tools serve --address A --port P --name N
    python -m tests.integration.netns.distributor_tools spread --host H --port P --count N [--udp]
    python -m tests.integration.netns.distributor_tools hold --host H --port P --count N [--udp]

``serve`` answers HTTP/1.1 with keep-alive on TCP and every UDP datagram on the same port with
its name; it prints ``ready`` once both are bound. ``spread`` opens ``count`` new connections
(UDP: a new socket, so a new source port, per datagram), one request each, and prints JSON
{answer or "error:<why>": n}. ``hold`` opens ``count`` keep-alive connections and, for every
line on stdin, sends one request on each and prints a JSON list of the answers (or
"error:<why>"), in connection order; the first list is printed at once. ``hold --udp`` does
the same with ``count`` connected UDP sockets (flows), one datagram each per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
from collections import Counter

_TIMEOUT = 2.0


def _echo(sock: socket.socket, body: bytes) -> None:
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(body, peer)


async def _serve(address: str, port: int, name: str) -> None:
    body = name.encode()
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, address, port, reuse_address=True)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((address, port))
    threading.Thread(target=_echo, args=(udp, body), daemon=True).start()
    print("ready", flush=True)
    async with server:
        await asyncio.Event().wait()


def _request(sock: socket.socket, host: str) -> str:
    """One GET on ``sock``; the body, or "error:<why>"."""
    try:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "error:closed"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            chunk = sock.recv(4096)
            if not chunk:
                return "error:closed"
            body += chunk
        return body.decode()
    except OSError as exc:
        return f"error:{type(exc).__name__}"


def _connect(host: str, port: int) -> socket.socket | str:
    try:
        return socket.create_connection((host, port), timeout=_TIMEOUT)
    except OSError as exc:
        return f"error:{type(exc).__name__}"


def _spread_tcp(host: str, port: int, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(count):
        sock = _connect(host, port)
        if isinstance(sock, str):
            seen[sock] += 1
            continue
        with sock:
            seen[_request(sock, host)] += 1
    return seen


def _spread_udp(host: str, port: int, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_TIMEOUT)
            try:
                sock.sendto(b"who", (host, port))
                seen[sock.recv(2048).decode()] += 1
            except OSError as exc:
                seen[f"error:{type(exc).__name__}"] += 1
    return seen


def _ask_udp(sock: socket.socket) -> str:
    """One datagram on a connected UDP socket (one flow); the answer, or "error:<why>"."""
    try:
        sock.send(b"who")
        return sock.recv(2048).decode()
    except OSError as exc:
        return f"error:{type(exc).__name__}"


def _connect_udp(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(_TIMEOUT)
    sock.connect((host, port))
    return sock


def _hold(host: str, port: int, count: int, udp: bool) -> None:
    if udp:
        flows = [_connect_udp(host, port) for _ in range(count)]

        def answers() -> list[str]:
            return [_ask_udp(f) for f in flows]
    else:
        connections = [_connect(host, port) for _ in range(count)]

        def answers() -> list[str]:
            return [c if isinstance(c, str) else _request(c, host) for c in connections]

    print(json.dumps(answers()), flush=True)
    for _ in sys.stdin:
        print(json.dumps(answers()), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="distributor_tools")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve")
    serve.add_argument("--address", required=True)
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--name", required=True)
    for name in ("spread", "hold"):
        client = commands.add_parser(name)
        client.add_argument("--host", required=True)
        client.add_argument("--port", type=int, required=True)
        client.add_argument("--count", type=int, required=True)
        client.add_argument("--udp", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(_serve(args.address, args.port, args.name))
    elif args.command == "hold":
        _hold(args.host, args.port, args.count, args.udp)
    else:
        spread = _spread_udp if args.udp else _spread_tcp
        json.dump(dict(spread(args.host, args.port, args.count)), sys.stdout)


if __name__ == "__main__":
    main()
