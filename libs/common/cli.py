"""The ``fulcrum`` console script: one subcommand per service, ``up``, and ``events``.

Service subcommands run ``services.<name>.__main__.main`` in this process; ``up`` runs the
whole embedded stack (see ``stack.py``); ``events tail`` follows the event stream live and
``events docs`` prints the reference of every event subject and payload.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

SERVICES = ("api", "provisioner", "health", "housekeeping", "amphora")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fulcrum", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SERVICES:
        sub.add_parser(name, help=f"run the {name} service (settings from FULCRUM_* env)")
    up = sub.add_parser("up", help="run the whole stack on this machine (embedded default)")
    up.add_argument("--state-dir", default=".state")
    up.add_argument("--port", type=int, default=9876, help="API port (0 = any free port)")
    events = sub.add_parser("events", help="the event stream, for outside subscribers")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    tail = events_sub.add_parser("tail", help="follow the stream live")
    tail.add_argument("--nats-url", default=None, help="default: FULCRUM_NATS_URL or .state")
    tail.add_argument("--subject", action="append", help="filter, e.g. fulcrum.events.amphora.>")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--from-start", action="store_true", help="replay everything first")
    start.add_argument("--from-seq", type=int, help="start at this stream sequence")
    start.add_argument("--last", type=int, help="start with the last N events")
    tail.add_argument("--count", type=int, default=None, help="stop after N events")
    tail.add_argument("--state-dir", default=".state")
    events_sub.add_parser("docs", help="print docs/events.md (generated from the registry)")
    args = parser.parse_args(argv)

    if args.command in SERVICES:
        module = importlib.import_module(f"services.{args.command}.__main__")
        result: int = module.main()
        return result
    if args.command == "up":
        from libs.common.stack import run_up

        return run_up(args.state_dir, args.port)
    if args.events_command == "docs":
        from libs.common.events.reference import render_reference

        sys.stdout.write(render_reference())
        return 0
    from libs.common.events.tail import TailOptions, tail_events

    options = TailOptions(
        nats_url=args.nats_url,
        state_dir=args.state_dir,
        subjects=args.subject or [],
        from_start=args.from_start,
        from_seq=args.from_seq,
        last=args.last,
        count=args.count,
    )
    return asyncio.run(tail_events(options))


if __name__ == "__main__":
    raise SystemExit(main())
