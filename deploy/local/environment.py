"""What a local stack hands its services and its users: each service's FULCRUM_* settings and
supervised program, the per-deployment secrets behind them, a ``clouds.yaml`` for the
``openstack`` CLI and the lines telling how to use the stack.

Secrets are made at the first start and kept (0600) in the state dir, so a restart keeps its
tokens, keys and the admin password.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from deploy.local.ports import LOOPBACK, StackPorts
from deploy.local.state import StackPaths
from deploy.local.supervision import Program
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from libs.common.secretstore import new_key
from libs.common.settings import HEARTBEAT_KEY_ENV, SECRET_KEYS_ENV, default_subnets

# Booted spares housekeeping keeps: a new LB takes one instead of waiting for a boot. As many as
# the provisioner works on at once (its default concurrency), so that a whole wave of concurrent
# creates (Terraform runs 10 at a time) starts without a boot: each boot costs about as much
# CPU as a create and more than doubles a burst's cost; an idle spare (an agent, no HAProxy)
# costs ~13 MB. A deployment expecting larger bursts keeps a pool the size of its bursts.
SPARE_POOL_SIZE: Final = 8


def _secret(state: Path, name: str, make: Callable[[], str] | None = None) -> str:
    """A per-deployment secret kept in the state dir (created at first start)."""
    path = state / name
    if not path.exists():
        path.write_text(make() if make is not None else secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass(frozen=True)
class ServiceAddresses:
    """Where one replica of each service listens, and what it tells its clients: the API's
    public URL (the front of a cluster), the heartbeat endpoints amphorae send to."""

    api: int
    provisioner: int
    health: int
    housekeeping: int
    health_udp: int
    public_url: str
    health_endpoints: tuple[str, ...]
    vip_octet: int
    # The API's operator listener (/healthz, /readyz, /metrics); 0: on the API's port.
    api_operator: int = 0

    @classmethod
    def of(cls, ports: StackPorts) -> ServiceAddresses:
        """The one replica of each service of the embedded default."""
        return cls(
            api=ports.api,
            provisioner=ports.provisioner,
            health=ports.health,
            housekeeping=ports.housekeeping,
            health_udp=ports.health_udp,
            public_url=ports.api_url,
            health_endpoints=(f"{LOOPBACK}:{ports.health_udp}",),
            vip_octet=ports.vip_octet,
            api_operator=ports.api_operator,
        )


def _amphora_driver() -> str:
    """The provisioner's amphora driver, for the API to refuse what it cannot honour: amphora
    hosts (``FULCRUM_PROVISIONER_HOSTS``) are netns or docker hosts, both fully able."""
    if os.environ.get("FULCRUM_PROVISIONER_HOSTS", "").strip() not in ("", "[]"):
        return "netns"
    return os.environ.get("FULCRUM_PROVISIONER_DRIVER", "process")


def service_environment(
    state: Path,
    pg_dsn: Callable[[str], str],
    nats: Callable[[str], dict[str, str]],
    addresses: ServiceAddresses,
) -> dict[str, dict[str, str]]:
    """The FULCRUM_* environment of each service for this deployment; ``pg_dsn(service)``:
    the DSN of that service's own Postgres role; ``nats(service)``: that service's
    ``NATS__*`` settings (URLs, credentials, replicas). Replicas of a service differ
    only in ``addresses``; all share the state dir's secrets, CA, identity file and amphora
    state."""
    heartbeat_key = _secret(state, "heartbeat.key")
    secret_keys = _secret(state, "secret.keys", new_key)
    env: dict[str, dict[str, str]] = {
        "api": {
            "PORT": str(addresses.api),
            "OPERATOR_PORT": str(addresses.api_operator),
            "PUBLIC_URL": addresses.public_url,
            "AUTH_STRATEGY": "keystone",
            "IDENTITY_FILE": str(state / "identity.yaml"),
            "ADMIN_PASSWORD": _secret(state, "admin.password"),
            "TOKEN_KEYS": _secret(state, "token.keys", new_key),
            "ADMIN_TOKEN": _secret(state, "admin.token"),
            "NETWORK__SUBNETS": json.dumps(vip_subnets(addresses.vip_octet)),
            "AMPHORA_DRIVER": _amphora_driver(),
        },
        "provisioner": {
            "PORT": str(addresses.provisioner),
            "STATE_DIR": str(state / "amphorae"),
            "CA_DIR": str(state / "ca"),
            "HEALTH_ENDPOINTS": json.dumps(list(addresses.health_endpoints)),
        },
        "health": {
            "PORT": str(addresses.health),
            "UDP_PORT": str(addresses.health_udp),
        },
        "housekeeping": {
            "PORT": str(addresses.housekeeping),
            "SPARES__POOL_SIZE": str(SPARE_POOL_SIZE),
            "CERTIFICATES__CA_CERT": str(state / "ca" / "ca.pem"),
        },
    }
    shared = {HEARTBEAT_KEY_ENV: heartbeat_key, SECRET_KEYS_ENV: secret_keys}
    return {
        svc: shared
        | {
            f"FULCRUM_{svc.upper()}_{k}": v
            for k, v in (values | {"POSTGRES__DSN": pg_dsn(svc)} | nats(svc)).items()
        }
        for svc, values in env.items()
    }


def service_program(name: str, service: str, paths: StackPaths, env: dict[str, str]) -> Program:
    """A replica ``name`` of ``service``, started once the servers are ready."""
    return Program(
        name,
        [sys.executable, "-m", f"services.{service}"],
        paths.log(name),
        environment=env,
        autostart=False,
    )


def usage_text(paths: StackPaths, clouds: Path, stop: str) -> str:
    """The closing lines of ``endpoint.txt``: how to use, watch and stop the stack."""
    return (
        f"Use it:\n"
        f"  export OS_CLIENT_CONFIG_FILE={clouds} OS_CLOUD=fulcrum\n"
        f"  openstack loadbalancer create --name my-lb --vip-subnet public-subnet\n"
        f"Status: fulcrum status --state-dir {paths.state}   Logs: {paths.state}/*.log   "
        f"Stop: {stop}\n"
    )


def issue_api_certificate(ca_dir: Path, directory: Path, names: list[str]) -> tuple[Path, Path]:
    """The API's server certificate issued by the deployment CA in ``ca_dir`` (made when
    missing) for ``names`` (addresses and host names), written to ``directory`` as
    ``api.pem`` (0644) and ``api.key`` (0600); a new one at every call. Returns both paths."""
    ca = DeploymentCA.load_or_create(ca_dir)
    cert, key = ca.issue_server_cert("fulcrum-api", names, validity_days=365)
    directory.mkdir(parents=True, exist_ok=True)
    write_private_file(directory / "api.pem", cert, mode=0o644)
    write_private_file(directory / "api.key", key)
    return directory / "api.pem", directory / "api.key"


def api_https_environment(state: Path, api_url: str) -> dict[str, str]:
    """The API's HTTPS settings: a server certificate for 127.0.0.1 and localhost issued by
    the deployment CA (``state/ca``, made at the first start), renewed at every start."""
    cert, key = issue_api_certificate(state / "ca", state / "api-tls", [LOOPBACK, "localhost"])
    return {
        "FULCRUM_API_TLS_CERT_FILE": str(cert),
        "FULCRUM_API_TLS_KEY_FILE": str(key),
        "FULCRUM_API_PUBLIC_URL": api_url,
    }


def write_clouds_yaml(state: Path, api_url: str, cacert: Path | None = None) -> Path:
    """A clouds.yaml the real ``openstack`` CLI and openstacksdk can use at once: cloud
    ``fulcrum`` (Keystone password of the bootstrap admin) and ``fulcrum-admin-token``; with
    ``cacert`` (an HTTPS API) both trust that CA."""
    trust = f"    cacert: {cacert}\n" if cacert is not None else ""
    path = state / "clouds.yaml"
    path.write_text(
        "clouds:\n"
        "  fulcrum:\n"
        "    auth_type: password\n"
        "    auth:\n"
        f"      auth_url: {api_url}/v3\n"
        "      username: admin\n"
        f"      password: {_secret(state, 'admin.password')}\n"
        "      project_name: admin\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
        "    region_name: RegionOne\n"
        "    interface: public\n"
        "    identity_api_version: 3\n"
        f"{trust}"
        "  fulcrum-admin-token:\n"
        "    auth_type: admin_token\n"
        "    auth:\n"
        f"      token: {_secret(state, 'admin.token')}\n"
        f"      endpoint: {api_url}\n"
        "    region_name: RegionOne\n"
        f"{trust}"
    )
    path.chmod(0o600)
    return path


def vip_subnets(octet: int) -> list[dict[str, Any]]:
    """The embedded default subnet (``public-subnet``) on 127.<octet>.0.0/16."""
    return vip_subnet(f"127.{octet}.0.0/16", f"127.{octet}.0.10", f"127.{octet}.255.250")


def vip_subnet(cidr: str, start: str, end: str, gateway: str | None = None) -> list[dict[str, Any]]:
    """The embedded default subnet (``public-subnet``) moved to ``cidr``, handing out VIPs
    from ``start`` to ``end``."""
    (subnet,) = default_subnets()
    update: dict[str, Any] = {"cidr": cidr, "allocation_start": start, "allocation_end": end}
    if gateway is not None:
        update["gateway_ip"] = gateway
    return [subnet.model_copy(update=update).model_dump()]
