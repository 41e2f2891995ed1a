"""Load balancer bodies: POST (incl. the single-call graph create) and PUT."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from services.api.http.schemas._base import (
    Input,
    IpAddress,
    Name,
    ProjectId,
    SubnetRef,
    Tags,
    Text255,
    Uuid,
)
from services.api.http.schemas.listener import ListenerSingleCreate
from services.api.http.schemas.pool import PoolSingleCreate


class AdditionalVip(Input):
    subnet_id: SubnetRef
    ip_address: IpAddress | None = None
    port_id: Uuid | None = None


class LoadBalancerCreate(Input):
    name: Name = None
    description: Name = None
    admin_state_up: bool = True
    vip_address: IpAddress | None = None
    vip_port_id: Uuid | None = None
    vip_subnet_id: SubnetRef | None = None
    vip_network_id: Uuid | None = None
    vip_qos_policy_id: Uuid | None = None
    vip_sg_ids: list[Uuid] | None = None
    additional_vips: list[AdditionalVip] | None = None
    project_id: ProjectId | None = None
    listeners: list[ListenerSingleCreate] | None = None
    pools: list[PoolSingleCreate] | None = None
    provider: Annotated[str, StringConstraints(max_length=64)] | None = None
    tags: Tags = None
    flavor_id: Uuid | None = None
    availability_zone: Text255 | None = None


class LoadBalancerUpdate(Input):
    name: Name = None
    description: Name = None
    admin_state_up: bool | None = None
    vip_qos_policy_id: Uuid | None = None
    vip_sg_ids: list[Uuid] | None = None
    tags: Tags = None
