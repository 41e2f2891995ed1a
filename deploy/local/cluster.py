"""``fulcrum up --cluster`` (``make up-cluster``): the cluster stack on one machine.

Every part runs more than once, as a real deployment spreads it over machines:

- 3 ``nats-server`` nodes with TLS cluster routes (``nats_cluster.py``); the event stream at
  R3; every service gets the three URLs (TLS, the deployment CA) and a user of its own with
  only its permissions (``nats_auth.py``);
- Postgres managed by Patroni with etcd (``patroni.py``): services use the multi-host DSN with
  ``target_session_attrs=read-write``, each as its own role (``postgres_roles.py``,
  provisioned once the primary and its standby are ready);
- ``REPLICAS`` replicas of api, provisioner, health and housekeeping (supervisord programs
  ``api-1``, ``api-2``, ...), each on ports of its own; the API replicas share the token key
  and the identity file, behind an HAProxy front (``front``, HTTPS with a certificate of the
  deployment CA, which the clouds.yaml written trusts) that checks each replica's
  ``/readyz`` on its operator port (``/healthz``, ``/readyz`` and ``/metrics`` are not on the
  API's tenant-facing ports, nor on the front's); amphorae send heartbeats to every health
  replica.

All of it under its own state dir (``.state-cluster`` by default), every port free-picked and
kept in ``ports.json``. ``cluster_plan`` builds what ``up.py`` runs; ``status`` and ``down``
read the layout it saves like the embedded default's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from deploy.local.cluster_hosts import AmphoraHosts
from deploy.local.environment import (
    ServiceAddresses,
    issue_api_certificate,
    service_environment,
    service_program,
    usage_text,
)
from deploy.local.nats_auth import EVENTS_READER, NatsTls, write_reader_files
from deploy.local.nats_cluster import NatsCluster
from deploy.local.patroni import PatroniCluster, PatroniPorts
from deploy.local.ports import LOOPBACK, PortPicker
from deploy.local.postgres_roles import PostgresLogins, provision_roles
from deploy.local.state import SERVICES, Part, StackLayout, StackPaths, StackPlan
from deploy.local.supervision import Program
from libs.common.pki import CA_CERT_FILE
from libs.common.private_files import write_private_file

REPLICAS: Final = 2
NATS_NODES: Final = 3
POSTGRES_MEMBERS: Final = 2
FRONT: Final = "front"
HAPROXY: Final = "/usr/sbin/haproxy"


def replica_names(service: str) -> list[str]:
    """The supervisord program names of ``service``'s replicas: ``api-1``, ``api-2``..."""
    return [f"{service}-{index}" for index in range(1, REPLICAS + 1)]


def render_front(
    port: int,
    monitor_port: int,
    api_ports: list[int],
    operator_ports: list[int],
    unavailable_file: Path,
    certificate: Path,
) -> str:
    """The HAProxy configuration of the API front (pure): round robin over the API replicas
    (``api_ports``), each checked on ``/readyz`` of its operator listener (``operator_ports``,
    in the same order) every 0.5 s (out after 2 failures, back after 2 successes). It adds
    the client's address to ``X-Forwarded-For``; the replicas trust it from the front's address
    (``FULCRUM_API_TRUSTED_PROXIES``), so the login throttle counts each client apart.

    The front serves HTTPS only, with ``certificate`` (a PEM of the certificate chain and its
    key); it forwards plain HTTP to the replicas on loopback.

    A request whose connection to a replica fails is sent to another one; only GET and HEAD
    are retried after a replica died mid-request (a create is never sent twice). When every
    replica fails its check at once (a dependency of all of them is briefly away, e.g. the
    event stream electing a leader), the same replicas serve as unchecked backups rather than
    the front refusing everything; with none reachable, clients get ``unavailable_file``'s
    JSON 503. The front's own readiness is ``/readyz`` on ``monitor_port`` (loopback): 200
    while a replica passes its check, else 503.
    """
    servers = [
        f"    server api-{index} {LOOPBACK}:{api} check port {operator}"
        for index, (api, operator) in enumerate(zip(api_ports, operator_ports, strict=True), 1)
    ]
    backups = [
        f"    server api-{index}-fallback {LOOPBACK}:{api} backup"
        for index, api in enumerate(api_ports, start=1)
    ]
    checked_up = " || ".join(
        f"{{ srv_is_up(api/api-{index}) }}" for index in range(1, len(api_ports) + 1)
    )
    return "\n".join(
        [
            "global",
            "    maxconn 4096",
            "defaults",
            "    mode http",
            "    timeout connect 2s",
            "    timeout client 120s",
            "    timeout server 120s",
            "    timeout check 2s",
            "    retries 3",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response response-timeout",
            f"    errorfile 503 {unavailable_file}",
            "frontend api",
            f"    bind {LOOPBACK}:{port} ssl crt {certificate}",
            "    option forwardfor",
            "    default_backend api",
            "frontend monitor",
            f"    bind {LOOPBACK}:{monitor_port}",
            "    monitor-uri /readyz",
            f"    monitor fail unless {checked_up}",
            "backend api",
            "    balance roundrobin",
            "    option allbackups",
            "    option httpchk GET /readyz",
            "    http-check expect status 200",
            "    http-request disable-l7-retry unless METH_GET || METH_HEAD",
            "    default-server inter 500ms fall 2 rise 2",
            *servers,
            *backups,
            "",
        ]
    )


def unavailable_response() -> str:
    """The front's raw HTTP answer when no API replica answers: JSON, as the API's errors."""
    body = json.dumps(
        {"faultcode": "Server", "faultstring": "No API replica answers; retry.", "debuginfo": None}
    )
    return (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-cache\r\n"
        "Connection: close\r\n"
        f"\r\n{body}"
    )


def cluster_plan(paths: StackPaths, api_port: int | None, amphora_hosts: int = 0) -> StackPlan:
    """The cluster stack under ``paths`` (see the module doc); ``api_port``: the front's;
    ``amphora_hosts``: netns hosts for the amphorae (``cluster_hosts.py``), 0: the process
    driver on loopback."""
    state = paths.state
    picker = PortPicker(paths)
    tls = NatsTls.from_deployment_ca(state / "ca", state / "nats" / "tls", LOOPBACK)
    nats = NatsCluster(state / "nats", size=NATS_NODES, tls=tls)  # picks, keeps its ports
    for node in nats.nodes:
        picker.record(node.name, node.ports.client)
        picker.record(f"{node.name}-routes", node.ports.cluster)
        picker.record(f"{node.name}-monitor", node.ports.monitor)
    front = picker.api(FRONT, api_port)
    front_monitor = picker.tcp(f"{FRONT}-monitor")
    service_ports = {
        name: picker.tcp(name) for service in SERVICES for name in replica_names(service)
    }
    operator_ports = {name: picker.tcp(f"{name}-operator") for name in replica_names("api")}
    udp = [picker.udp(f"{name}-udp") for name in replica_names("health")]
    vip_octet = picker.vip_octet()
    patroni = _patroni(paths, picker.tcp)
    logins = PostgresLogins(state / "postgres-logins", patroni.dsn)
    picker.save()
    front_url = f"https://{LOOPBACK}:{front}"
    hosts = AmphoraHosts(vip_octet, amphora_hosts) if amphora_hosts else None
    heartbeat_host = hosts.gateway if hosts is not None else LOOPBACK
    endpoints = tuple(f"{heartbeat_host}:{port}" for port in udp)

    programs: list[Program] = [*patroni.programs(), *nats.programs(log_dir=state)]
    parts: list[Part] = []
    for program in programs:
        if program.name.startswith("nats-"):
            node = nats.node(program.name)
            probe = f"{node.monitor_url}/healthz?js-enabled-only=true"
        elif program.name.endswith("etcd"):
            probe = f"{patroni.etcd_url}/health"
        else:
            probe = patroni.member_dsn(program.name, "postgres")
        parts.append(Part(program.name, _marker(program, state), probe, True, program.stop_signal))
    for index in range(REPLICAS):
        names = {service: replica_names(service)[index] for service in SERVICES}
        addresses = ServiceAddresses(
            api=service_ports[names["api"]],
            provisioner=service_ports[names["provisioner"]],
            health=service_ports[names["health"]],
            housekeeping=service_ports[names["housekeeping"]],
            health_udp=udp[index],
            public_url=front_url,
            health_endpoints=endpoints,
            vip_octet=vip_octet,
            api_operator=operator_ports[names["api"]],
        )
        envs = service_environment(state, logins.dsn_for, nats.environment_for, addresses)
        envs["api"]["FULCRUM_API_TRUSTED_PROXIES"] = json.dumps([f"{LOOPBACK}/32"])
        if hosts is not None:
            envs["provisioner"] |= _prefixed("provisioner", hosts.provisioner_environment())
            envs["health"] |= _prefixed("health", {"UDP_HOST": hosts.gateway})
            envs["api"] |= _prefixed(
                "api",
                {"NETWORK__SUBNETS": json.dumps(hosts.vip_subnets()), "AMPHORA_DRIVER": "netns"},
            )
        for service in SERVICES:
            name = names[service]
            programs.append(service_program(name, service, paths, envs[service]))
            readiness = operator_ports.get(name, service_ports[name])
            parts.append(Part(name, f"services.{service}", f"http://{LOOPBACK}:{readiness}/readyz"))
    write_reader_files(state, nats.credentials_for(EVENTS_READER), tls)
    (state / "postgres.dsn").touch(mode=0o600)
    (state / "postgres.dsn").write_text(patroni.dsn)
    front_config = state / "front.cfg"
    api_ports = [service_ports[name] for name in replica_names("api")]
    unavailable = state / "front-503.http"
    unavailable.write_text(unavailable_response())
    certificate = front_certificate(state)
    front_config.write_text(
        render_front(
            front, front_monitor, api_ports, list(operator_ports.values()), unavailable, certificate
        )
    )
    programs.append(
        Program(FRONT, [HAPROXY, "-db", "-f", str(front_config)], paths.log(FRONT), autostart=False)
    )
    parts.append(Part(FRONT, str(front_config), f"http://{LOOPBACK}:{front_monitor}/readyz"))
    vips = f"127.{vip_octet}.0.0/16"
    if hosts is not None:
        vips = (
            f"{hosts.vip_subnets()[0]['cidr']} on {amphora_hosts} netns hosts (members: "
            f"listen on {hosts.gateway}, their gateway)"
        )
    addresses_text = [
        f"API (Octavia v2, Neutron and Keystone subsets; HAProxy front over ports "
        f"{', '.join(map(str, api_ports))}): {front_url}",
        f"API operator endpoints (/readyz, /metrics): ports "
        f"{', '.join(map(str, operator_ports.values()))}; the front's /readyz: {front_monitor}",
        f"Dashboard: {front_url}/dashboard/",
        f"NATS: {', '.join(nats.urls)} (stream at R{nats.replicas})",
        f"Postgres: {_without_password(patroni.dsn)}",
        f"heartbeats: udp {', '.join(endpoints)}   VIPs: {vips}",
    ]
    return StackPlan(
        programs=programs,
        layout=StackLayout(
            "cluster",
            parts,
            patroni.dsn,
            addresses_text,
            hosts.prefixes if hosts is not None else [],
        ),
        api_url=front_url,
        nats_urls=nats.urls,
        endpoint=lambda clouds: _endpoint_text(paths, addresses_text, clouds),
        cacert=state / "ca" / CA_CERT_FILE,
        servers_ready=lambda deadline: _servers_ready(patroni, logins, hosts, state, deadline),
    )


def front_certificate(state: Path) -> Path:
    """The front's HTTPS certificate (127.0.0.1 and localhost) issued by the deployment CA
    (``state/ca``), renewed at every start: ``front-tls/front.pem``, the chain followed by
    its key (0600), as HAProxy's ``crt`` reads it."""
    directory = state / "front-tls"
    cert, key = issue_api_certificate(state / "ca", directory, [LOOPBACK, "localhost"])
    bundle = directory / "front.pem"
    write_private_file(bundle, cert.read_bytes() + key.read_bytes())
    return bundle


def _patroni(paths: StackPaths, port: Callable[[str], int]) -> PatroniCluster:
    """The Patroni cluster of the stack under ``paths``, its ports named in ``ports.json``."""
    members = [f"pg{index}" for index in range(POSTGRES_MEMBERS)]
    ports = PatroniPorts(
        etcd_client=port("etcd"),
        etcd_peer=port("etcd-peer"),
        postgres=tuple(port(name) for name in members),
        restapi=tuple(port(f"{name}-rest") for name in members),
    )
    return PatroniCluster(paths.state / "patroni", ports)


def running_patroni(paths: StackPaths) -> PatroniCluster:
    """The Patroni cluster of the running stack under ``paths`` (its saved ports), for tools
    that measure or break it."""
    saved: dict[str, int] = json.loads(paths.ports.read_text())
    return _patroni(paths, saved.__getitem__)


def _servers_ready(
    patroni: PatroniCluster,
    logins: PostgresLogins,
    hosts: AmphoraHosts | None,
    state: Path,
    deadline: float,
) -> None:
    """Before the services start: a primary with its sync standby, the owner's and services'
    roles and the schema, the hosts' switch."""
    patroni.wait_ready(max(deadline - time.monotonic(), 1.0))
    provision_roles(patroni.dsn, logins)
    if hosts is not None:
        hosts.prepare(state)


def _prefixed(service: str, values: dict[str, str]) -> dict[str, str]:
    return {f"FULCRUM_{service.upper()}_{key}": value for key, value in values.items()}


def _marker(program: Program, state: Path) -> str:
    """The argument that tells ``program``'s process apart: the first naming a file of the
    state dir (its config), else the executable."""
    return next((arg for arg in program.command if str(state) in arg), program.command[0])


def _without_password(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    return dsn.replace(f":{parts.password}@", ":***@", 1)


def _endpoint_text(paths: StackPaths, addresses: list[str], clouds: Path) -> str:
    lines = "".join(f"  {line}\n" for line in addresses)
    return (
        f"Fulcrum cluster is up.\n{lines}"
        f"  clouds.yaml: {clouds}\n"
        f"  Postgres DSN, with its password: {paths.state / 'postgres.dsn'}\n"
        f"{usage_text(paths, clouds, 'make down-cluster')}"
    )
