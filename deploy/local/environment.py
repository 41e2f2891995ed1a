"""What a local stack hands its services and its users: each service's FULCRUM_* settings, the
per-deployment secrets behind them, and a ``clouds.yaml`` for the ``openstack`` CLI.

Secrets are made at the first start and kept (0600) in the state dir, so a restart keeps its
tokens, keys and the admin password.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.local.ports import LOOPBACK, StackPorts
from libs.common.secretstore import new_key
from libs.common.settings import HEARTBEAT_KEY_ENV, SECRET_KEYS_ENV, default_subnets


def _secret(state: Path, name: str, make: Callable[[], str] | None = None) -> str:
    """A per-deployment secret kept in the state dir (created at first start)."""
    path = state / name
    if not path.exists():
        path.write_text(make() if make is not None else secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _amphora_driver() -> str:
    """The provisioner's amphora driver, for the API to refuse what it cannot honour: amphora
    hosts (``FULCRUM_PROVISIONER_HOSTS``) are netns or docker hosts, both fully able."""
    if os.environ.get("FULCRUM_PROVISIONER_HOSTS", "").strip() not in ("", "[]"):
        return "netns"
    return os.environ.get("FULCRUM_PROVISIONER_DRIVER", "process")


def service_environment(
    state: Path, pg_dsn: str, nats_url: str, ports: StackPorts
) -> dict[str, dict[str, str]]:
    """The FULCRUM_* environment of each service for this deployment."""
    heartbeat_key = _secret(state, "heartbeat.key")
    secret_keys = _secret(state, "secret.keys", new_key)
    common = {
        "POSTGRES__DSN": pg_dsn,
        "NATS__URL": nats_url,
    }
    env: dict[str, dict[str, str]] = {
        "api": {
            **common,
            "PORT": str(ports.api),
            "PUBLIC_URL": ports.api_url,
            "AUTH_STRATEGY": "keystone",
            "IDENTITY_FILE": str(state / "identity.yaml"),
            "ADMIN_PASSWORD": _secret(state, "admin.password"),
            "TOKEN_KEY": _secret(state, "token.key"),
            "ADMIN_TOKEN": _secret(state, "admin.token"),
            "NETWORK__SUBNETS": json.dumps(vip_subnets(ports.vip_octet)),
            "AMPHORA_DRIVER": _amphora_driver(),
        },
        "provisioner": {
            **common,
            "PORT": str(ports.provisioner),
            "STATE_DIR": str(state / "amphorae"),
            "CA_DIR": str(state / "ca"),
            "HEALTH_ENDPOINTS": f'["{LOOPBACK}:{ports.health_udp}"]',
        },
        "health": {
            **common,
            "PORT": str(ports.health),
            "UDP_PORT": str(ports.health_udp),
        },
        "housekeeping": {
            **common,
            "PORT": str(ports.housekeeping),
            # Two booted spares: a new LB takes one instead of waiting for a boot.
            "SPARES__POOL_SIZE": "2",
            "CERTIFICATES__CA_CERT": str(state / "ca" / "ca.pem"),
        },
    }
    shared = {HEARTBEAT_KEY_ENV: heartbeat_key, SECRET_KEYS_ENV: secret_keys}
    return {
        svc: shared | {f"FULCRUM_{svc.upper()}_{k}": v for k, v in values.items()}
        for svc, values in env.items()
    }


def write_clouds_yaml(state: Path, api_url: str) -> Path:
    """A clouds.yaml the real ``openstack`` CLI and openstacksdk can use at once: cloud
    ``fulcrum`` (Keystone password of the bootstrap admin) and ``fulcrum-admin-token``."""
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
        "  fulcrum-admin-token:\n"
        "    auth_type: admin_token\n"
        "    auth:\n"
        f"      token: {_secret(state, 'admin.token')}\n"
        f"      endpoint: {api_url}\n"
        "    region_name: RegionOne\n"
    )
    path.chmod(0o600)
    return path


def vip_subnets(octet: int) -> list[dict[str, Any]]:
    """The embedded default subnet (``public-subnet``) on 127.<octet>.0.0/16."""
    (subnet,) = default_subnets()
    return [
        subnet.model_copy(
            update={
                "cidr": f"127.{octet}.0.0/16",
                "allocation_start": f"127.{octet}.0.10",
                "allocation_end": f"127.{octet}.255.250",
            }
        ).model_dump()
    ]
