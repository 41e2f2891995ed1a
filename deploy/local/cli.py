"""The ``fulcrum`` console script, and the one composition root that imports every service.

``fulcrum <service>`` runs that service's ``__main__.main`` in this process (settings from the
FULCRUM_* environment); ``up`` runs the whole embedded stack under supervision (``up.py``),
``status`` shows it and ``down`` stops it; ``identity`` adds users, projects and role grants
to the identity file (``identity_cli.py``); ``events tail`` follows the event stream live and
``events docs`` prints the reference of every event subject and payload, ``config docs`` that
of every setting (``fulcrum <service> --help`` lists the service's). Client commands exit
2 with one line when their server does not answer.

Nothing else may import more than one service (``make lint`` checks it). Each entry point
imports its service only when run, so ``fulcrum status`` does not load five services.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Final


def _api() -> int:
    from services.api.__main__ import main

    return main()


def _provisioner() -> int:
    from services.provisioner.__main__ import main

    return main()


def _health() -> int:
    from services.health.__main__ import main

    return main()


def _housekeeping() -> int:
    from services.housekeeping.__main__ import main

    return main()


def _amphora() -> int:
    from services.amphora.__main__ import main

    main()
    return 0


SERVICE_ENTRY_POINTS: Final[dict[str, Callable[[], int]]] = {
    "api": _api,
    "provisioner": _provisioner,
    "health": _health,
    "housekeeping": _housekeeping,
    "amphora": _amphora,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fulcrum", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from deploy.local.configuration import SettingsHelp

    for name in SERVICE_ENTRY_POINTS:
        service = sub.add_parser(
            name,
            help=f"run the {name} service (settings from FULCRUM_* env; --help lists them)",
            description=f"Run the {name} service; its settings come from the environment.",
            add_help=False,
        )
        service.add_argument("-h", "--help", action=SettingsHelp)
    up = sub.add_parser("up", help="run the whole stack on this machine (embedded default)")
    up.add_argument("--state-dir", default=None, help="default: .state (.state-cluster)")
    up.add_argument(
        "--cluster",
        action="store_true",
        help="the cluster stack: 3 NATS nodes, replicated Postgres, 2 replicas of each "
        "service behind an HAProxy front (docs/deployment.md)",
    )
    up.add_argument(
        "--amphora-hosts",
        type=int,
        default=0,
        help="with --cluster: amphorae on this many netns hosts (root; 198.19.N.0/24) "
        "instead of the process driver on loopback",
    )
    up.add_argument(
        "--port",
        type=int,
        default=None,
        help="API port; 0: any free (default: the last start's, else 9876 when free, else any)",
    )
    up.add_argument(
        "--https",
        action="store_true",
        help="the single stack's API on HTTPS with a certificate of the deployment CA (clouds.yaml "
        "trusts it); the cluster's front always is",
    )
    status = sub.add_parser("status", help="each part of the stack: pid, uptime, restarts, ready")
    status.add_argument("--state-dir", default=".state")
    status.add_argument("--json", action="store_true", help="machine-readable")
    down = sub.add_parser("down", help="stop the stack started by `up` and its amphorae")
    down.add_argument("--state-dir", default=".state")
    identity = sub.add_parser("identity", help="users, projects and role grants (identity.yaml)")
    from deploy.local.identity_cli import add_arguments as add_identity_arguments

    add_identity_arguments(identity)
    events = sub.add_parser("events", help="the event stream, for outside subscribers")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    tail = events_sub.add_parser("tail", help="follow the stream live")
    tail.add_argument(
        "--nats-url",
        default=None,
        help="one or comma-separated; default: FULCRUM_NATS_URL or .state",
    )
    tail.add_argument("--nats-user", default=None, help="password: FULCRUM_NATS_PASSWORD")
    tail.add_argument("--nats-creds", default=None, help="a .creds file (JWT and nkey seed)")
    tail.add_argument("--nats-tls-ca", default=None, help="CA file verifying the servers")
    tail.add_argument("--nats-tls-cert", default=None, help="client certificate (PEM)")
    tail.add_argument("--nats-tls-key", default=None, help="its private key (PEM)")
    tail.add_argument("--subject", action="append", help="filter, e.g. fulcrum.events.amphora.>")
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--from-start", action="store_true", help="replay everything first")
    start.add_argument("--from-seq", type=int, help="start at this stream sequence")
    start.add_argument("--last", type=int, help="start with the last N events")
    tail.add_argument("--count", type=int, default=None, help="stop after N events")
    tail.add_argument("--state-dir", default=".state")
    tail.add_argument(
        "--connect-timeout", type=float, default=3.0, help="seconds to wait for NATS (exit 2)"
    )
    tail.add_argument(
        "--reconnect-window",
        type=float,
        default=10.0,
        help="seconds a lost connection may stay down before the tail exits 2",
    )
    events_sub.add_parser("docs", help="print docs/events.md (generated from the registry)")
    config = sub.add_parser("config", help="the services' settings")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser(
        "docs", help="print docs/configuration.md (generated from the settings classes)"
    )
    args = parser.parse_args(argv)

    if args.command in SERVICE_ENTRY_POINTS:
        return SERVICE_ENTRY_POINTS[args.command]()
    if args.command == "up":
        from deploy.local.up import run_up

        state_dir = args.state_dir or (".state-cluster" if args.cluster else ".state")
        if args.https and args.cluster:
            parser.error("--https is for the single stack (the cluster's front is always HTTPS)")
        return run_up(state_dir, args.port, args.cluster, args.amphora_hosts, args.https)
    if args.command == "status":
        from deploy.local.status import run_status

        return run_status(args.state_dir, as_json=args.json)
    if args.command == "down":
        from deploy.local.down import run_down

        return run_down(args.state_dir)
    if args.command == "identity":
        from deploy.local.identity_cli import run_identity

        return run_identity(args)
    if args.command == "config":
        from deploy.local.configuration import render_configuration

        sys.stdout.write(render_configuration())
        return 0
    if args.events_command == "docs":
        from libs.common.events.reference import render_reference

        sys.stdout.write(render_reference())
        return 0
    from libs.common.events.tail import TailOptions, tail_events

    options = TailOptions(
        nats_url=args.nats_url,
        user=args.nats_user,
        creds_file=args.nats_creds,
        tls_ca_file=args.nats_tls_ca,
        tls_cert_file=args.nats_tls_cert,
        tls_key_file=args.nats_tls_key,
        state_dir=args.state_dir,
        subjects=args.subject or [],
        from_start=args.from_start,
        from_seq=args.from_seq,
        last=args.last,
        count=args.count,
        connect_timeout=args.connect_timeout,
        reconnect_window=args.reconnect_window,
    )
    return asyncio.run(tail_events(options))


if __name__ == "__main__":
    raise SystemExit(main())
