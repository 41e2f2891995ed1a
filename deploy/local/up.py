"""``fulcrum up``: the whole stack on one machine, the embedded default.

``up`` picks the ports (``ports.py``), prepares Postgres and NATS (``embedded.py``), and hands
Postgres, NATS and the four services (api, provisioner, health, housekeeping) to supervisord
(``supervision.py``), which restarts whatever crashes. It waits until every part is ready as
``fulcrum status`` sees it, writes ``endpoint.txt``, ``clouds.yaml`` and ``ready``, then
watches and reports give-ups until SIGTERM/SIGINT, when it stops supervisord (services first,
then NATS and Postgres) and the amphorae.

Amphorae are nobody's children: the process driver starts them in sessions of their own, so
a crash of any service, of supervisord or of ``up`` itself leaves every VIP serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Final

from deploy.local.down import release_amphorae
from deploy.local.embedded import EmbeddedNats, EmbeddedPostgres
from deploy.local.environment import (
    ServiceAddresses,
    api_https_environment,
    service_environment,
    service_program,
    usage_text,
    write_clouds_yaml,
)
from deploy.local.nats_auth import (
    EVENTS_READER,
    NatsTls,
    NatsUsers,
    client_environment,
    write_reader_files,
)
from deploy.local.ports import LOOPBACK, StackPorts, choose_ports
from deploy.local.postgres_roles import HBA_RULES, PostgresLogins, provision_roles
from deploy.local.state import (
    SERVICES,
    Part,
    StackError,
    StackLayout,
    StackPaths,
    StackPlan,
    pid_alive,
)
from deploy.local.status import collect_status
from deploy.local.supervision import (
    FATAL,
    Program,
    SupervisorClient,
    SupervisorUnreachable,
    render_config,
)
from libs.common.errors import FulcrumError
from libs.common.pki import CA_CERT_FILE

READY_TIMEOUT: Final = 120.0


def _single_plan(paths: StackPaths, api_port: int | None, https: bool = False) -> StackPlan:
    """The embedded default: one Postgres, one NATS, one of each service (``https``: the API
    on HTTPS with a certificate of the deployment CA)."""
    state = paths.state
    ports = choose_ports(paths, api_port)
    pg = EmbeddedPostgres(state / "postgres", port=ports.postgres, hba=HBA_RULES)
    pg_command = pg.supervised_command()
    logins = PostgresLogins(state / "postgres" / "logins", pg.dsn)
    users = NatsUsers(state / "nats" / "credentials")
    tls = NatsTls.from_deployment_ca(state / "ca", state / "nats" / "tls", LOOPBACK)
    nats_server = EmbeddedNats(
        state / "nats",
        port=ports.nats,
        config="\n".join(tls.server_block()) + "\n" + users.authorization(),
        scheme="tls",
    )
    write_reader_files(state, users.credentials_for(EVENTS_READER), tls)
    envs = service_environment(
        state,
        logins.dsn_for,
        lambda service: client_environment([nats_server.url], users.credentials_for(service), tls),
        ServiceAddresses.of(ports),
    )
    api_url = ports.api_url
    if https:
        api_url = api_url.replace("http://", "https://", 1)
        envs["api"] |= api_https_environment(state, api_url)
    programs = [
        Program(
            "postgres",
            pg_command,
            paths.log("postgres"),
            priority=10,
            stop_signal="INT",  # fast shutdown: disconnect clients, checkpoint, exit
            stop_wait=30,
            environment={"LC_ALL": "C"},
        ),
        Program(
            "nats",
            nats_server.supervised_command(ports.nats_monitor),
            paths.log("nats"),
            priority=20,
        ),
        *(service_program(name, name, paths, envs[name]) for name in SERVICES),
    ]
    parts = [
        Part("postgres", "postgres", pg.local_dsn, server=True, stop_signal="INT"),
        Part(
            "nats",
            "nats-server",
            f"http://{LOOPBACK}:{ports.nats_monitor}/healthz?js-enabled-only=true",
            server=True,
        ),
        *(
            Part(name, f"services.{name}", f"http://{LOOPBACK}:{ports.operator_port(name)}/readyz")
            for name in SERVICES
        ),
    ]
    addresses = [
        f"API: {api_url}   Postgres: {LOOPBACK}:{ports.postgres}   NATS: "
        f"{nats_server.url}   heartbeats: udp {LOOPBACK}:{ports.health_udp}   VIPs: "
        f"127.{ports.vip_octet}.0.0/16",
        f"/readyz: api {ports.operator_port('api')}, provisioner {ports.provisioner}, "
        f"health {ports.health}, housekeeping {ports.housekeeping}",
    ]
    return StackPlan(
        programs=programs,
        layout=StackLayout("single", parts, pg.local_dsn, addresses),
        api_url=api_url,
        nats_urls=[nats_server.url],
        endpoint=lambda clouds: _endpoint_text(
            paths, ports, api_url, pg.local_dsn, nats_server.url, clouds
        ),
        cacert=state / "ca" / CA_CERT_FILE if https else None,
        servers_ready=lambda deadline: provision_roles(pg.local_dsn, logins),
    )


def _supervisor_environment() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, ...) would steer Postgres and the services' drivers.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _wait_ready(
    paths: StackPaths, supervisord: subprocess.Popen[bytes], names: tuple[str, ...], deadline: float
) -> None:
    """Until the parts ``names`` are ready as ``fulcrum status`` sees them; StackError when
    supervisord exits, one of them keeps crashing at start, or ``deadline`` passes."""
    detail = ""
    while time.monotonic() < deadline:
        if supervisord.poll() is not None:
            raise StackError(f"supervisord exited with {supervisord.returncode}")
        try:
            parts = [p for p in collect_status(paths, 2.0).parts if p.name in names]
        except StackError as exc:  # its socket is not there yet
            detail = str(exc)
        else:
            for part in parts:
                if part.state == FATAL:
                    raise StackError(f"{part.name} keeps crashing at start")
            if all(part.ready for part in parts):
                return
            detail = "; ".join(f"{p.name}: {p.state} {p.detail}" for p in parts if not p.ready)
        time.sleep(0.1)
    raise StackError(f"{', '.join(names)} not ready after {READY_TIMEOUT:.0f} s: {detail}")


def _log_tails(programs: list[Program]) -> str:
    parts = []
    for program in programs:
        try:
            tail = program.log_file.read_text(errors="replace")[-1500:]
        except OSError:
            continue
        parts.append(f"--- {program.log_file} ---\n{tail}")
    return "\n".join(parts)


def _endpoint_text(
    paths: StackPaths, ports: StackPorts, api_url: str, pg_dsn: str, nats_url: str, clouds: Path
) -> str:
    return (
        f"Fulcrum is up.\n"
        f"  API (Octavia v2, Neutron and Keystone subsets): {api_url}\n"
        f"  Dashboard: {api_url}/dashboard/ (log in as in clouds.yaml)\n"
        f"  Postgres: {pg_dsn} (superuser, its socket; services: {LOOPBACK}:{ports.postgres} "
        f"with their own roles)\n"
        f"  NATS: {nats_url} (users and TLS: docs/security.md)\n"
        f"  VIPs: 127.{ports.vip_octet}.0.0/16 (subnet public-subnet)\n"
        f"  Heartbeats: udp {LOOPBACK}:{ports.health_udp}   readiness and metrics: "
        f"api :{ports.operator_port('api')}, provisioner :{ports.provisioner}, "
        f"health :{ports.health}, housekeeping :{ports.housekeeping}\n"
        f"  clouds.yaml: {clouds}\n"
        f"{usage_text(paths, clouds, 'make down')}"
    )


def run_up(
    state_dir: str,
    api_port: int | None,
    cluster: bool = False,
    amphora_hosts: int = 0,
    https: bool = False,
) -> int:
    """Run the stack (``cluster``: the cluster stack of ``cluster.py``, its amphorae on
    ``amphora_hosts`` netns hosts when not 0; ``https``: the single stack's API on HTTPS)
    until SIGTERM/SIGINT; returns the exit code (1: it could not start)."""
    paths = StackPaths(Path(state_dir).resolve())
    state = paths.state
    state.mkdir(parents=True, exist_ok=True)
    (state / "ready").unlink(missing_ok=True)
    running = pid_alive(paths.supervisor_pid)
    if running is not None:
        print(f"fulcrum up: a stack already runs under {state} (supervisord pid {running})")
        return 1
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    supervisord: subprocess.Popen[bytes] | None = None
    client = SupervisorClient(paths.supervisor_socket)
    programs: list[Program] = []
    try:
        if cluster:
            from deploy.local.cluster import cluster_plan

            plan = cluster_plan(paths, api_port, amphora_hosts)
        else:
            plan = _single_plan(paths, api_port, https)
        programs = plan.programs
        plan.layout.save(paths.layout)
        paths.supervisor_conf.write_text(
            render_config(
                socket_path=paths.supervisor_socket,
                pid_file=paths.supervisor_pid,
                log_file=state / "supervisord.log",
                programs=programs,
                restarts_file=paths.restarts,
                listener_log=state / "restarts.log",
            )
        )
        paths.restarts.unlink(missing_ok=True)
        # Its own session: a terminal's Ctrl-C reaches `up` only, which stops things in order;
        # and supervisord (with the services) outlives an `up` killed hard.
        with open(state / "supervisord.err", "ab") as errors:
            supervisord = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supervisor.supervisord",
                    "-n",
                    "-c",
                    str(paths.supervisor_conf),
                ],
                env=_supervisor_environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
            )
        print(f"fulcrum up: supervisord pid {supervisord.pid}", flush=True)
        deadline = time.monotonic() + READY_TIMEOUT
        _wait_ready(paths, supervisord, plan.layout.servers, deadline)
        plan.servers_ready(deadline)
        for name in plan.layout.services:
            client.start(name)
        _wait_ready(paths, supervisord, plan.layout.services, deadline)
        clouds = write_clouds_yaml(state, plan.api_url, plan.cacert)
        endpoint = plan.endpoint(clouds)
        (state / "endpoint.txt").write_text(endpoint)
        (state / "nats.url").write_text(",".join(plan.nats_urls))
        print(endpoint, flush=True)
        (state / "ready").write_text(str(os.getpid()))
        if _watch(supervisord, client, lambda: stopping):
            return 0
        # supervisord itself died: what it ran may still run, and the amphorae serve on.
        # Stopping them here would take every VIP down for a control-plane failure.
        supervisord = None
        print(
            "fulcrum up: supervisord died; the amphorae keep serving and the parts it ran may "
            f"still run. Stop them with: fulcrum down --state-dir {state}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except (FulcrumError, OSError, ValueError) as exc:
        print(f"fulcrum up: failed: {exc}\n{_log_tails(programs)}", file=sys.stderr, flush=True)
        return 1
    finally:
        (state / "ready").unlink(missing_ok=True)
        if supervisord is not None:
            _stop_supervisor(supervisord, client)
            release_amphorae(paths)


def _watch(
    supervisord: subprocess.Popen[bytes], client: SupervisorClient, stopping: Callable[[], bool]
) -> bool:
    """Until asked to stop (True) or supervisord dies (False): report every part supervisord
    gave up on, once, loudly."""
    reported: set[str] = set()
    while not stopping():
        if supervisord.poll() is not None:
            print(f"fulcrum up: supervisord exited ({supervisord.returncode})", flush=True)
            return False
        with contextlib.suppress(SupervisorUnreachable):
            for info in client.processes():
                if info.state == FATAL and info.name not in reported:
                    print(
                        f"fulcrum up: GAVE UP on {info.name}: it crashed at start too often in "
                        f"a row; the rest keeps running. Fix it, then: make down && make up",
                        flush=True,
                    )
                    reported.add(info.name)
                elif info.state != FATAL:
                    reported.discard(info.name)
        time.sleep(0.5)
    return True


def _stop_supervisor(supervisord: subprocess.Popen[bytes], client: SupervisorClient) -> None:
    if supervisord.poll() is None:
        supervisord.send_signal(signal.SIGTERM)  # stops programs in reverse priority order
        try:
            supervisord.wait(timeout=90)
        except subprocess.TimeoutExpired:
            supervisord.kill()
            supervisord.wait()
