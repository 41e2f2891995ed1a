"""Builders of domain resources for tests (pure data; ids are fresh UUIDs)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from libs.common.domain.model import (
    HealthMonitor,
    Listener,
    LoadBalancer,
    Member,
    Pool,
)

PROJECT = "5f2a9c1e3b4d4e6f8a7b9c0d1e2f3a4b"
SUBNET = "6a3b9c3e-5f2d-4c1a-9b7e-1f0d2c3b4a51"
NETWORK = "0c9a4e2b-8d7f-4f6e-a1b2-3c4d5e6f7a81"


def _base(**fields: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "project_id": PROJECT,
        "created_at": datetime.now(UTC),
    } | fields


def loadbalancer(vip: str, **fields: Any) -> LoadBalancer:
    return LoadBalancer(
        **_base(
            name="lb",
            vip_address=vip,
            vip_port_id=str(uuid.uuid4()),
            vip_subnet_id=SUBNET,
            vip_network_id=NETWORK,
            **fields,
        )
    )


def listener(lb: LoadBalancer, port: int, protocol: str = "HTTP", **fields: Any) -> Listener:
    return Listener(**_base(loadbalancer_id=lb.id, protocol=protocol, protocol_port=port, **fields))


def pool(
    lb: LoadBalancer, protocol: str = "HTTP", algorithm: str = "ROUND_ROBIN", **f: Any
) -> Pool:
    return Pool(**_base(loadbalancer_id=lb.id, protocol=protocol, lb_algorithm=algorithm, **f))


def member(pool_: Pool, port: int, address: str = "127.0.0.1", **fields: Any) -> Member:
    return Member(**_base(pool_id=pool_.id, address=address, protocol_port=port, **fields))


def healthmonitor(pool_: Pool, kind: str = "HTTP", **fields: Any) -> HealthMonitor:
    defaults: dict[str, Any] = {"delay": 1, "timeout": 1, "max_retries": 1, "max_retries_down": 1}
    if kind in ("HTTP", "HTTPS"):
        defaults |= {"http_method": "GET", "url_path": "/", "expected_codes": "200"}
    return HealthMonitor(**_base(pool_id=pool_.id, type=kind, **(defaults | fields)))
