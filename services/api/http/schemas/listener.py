"""Listener bodies: POST, PUT and the single-create form nested in load balancers."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from libs.common.domain.model import ListenerProtocol
from services.api.http.schemas._base import (
    Cidr,
    Ciphers,
    ConnectionLimit,
    ContainerRef,
    Input,
    Name,
    Port,
    ProjectId,
    Tags,
    Text255,
    Timeout,
    Uuid,
)
from services.api.http.schemas.l7 import L7PolicySingleCreate
from services.api.http.schemas.pool import AlpnProtocol, PoolSingleCreate, TlsVersion


class ClientAuthentication(StrEnum):
    NONE = "NONE"
    OPTIONAL = "OPTIONAL"
    MANDATORY = "MANDATORY"


HstsMaxAge = Annotated[int, Field(ge=0)]


class ListenerMutableFields(Input):
    """What both POST and PUT accept."""

    name: Name = None
    description: Name = None
    connection_limit: ConnectionLimit | None = None
    default_tls_container_ref: ContainerRef | None = None
    sni_container_refs: list[ContainerRef] | None = None
    insert_headers: dict[str, Text255] | None = None
    timeout_client_data: Timeout | None = None
    timeout_member_connect: Timeout | None = None
    timeout_member_data: Timeout | None = None
    timeout_tcp_inspect: Timeout | None = None
    tags: Tags = None
    client_ca_tls_container_ref: ContainerRef | None = None
    client_authentication: ClientAuthentication | None = None
    client_crl_container_ref: ContainerRef | None = None
    allowed_cidrs: list[Cidr] | None = None
    tls_ciphers: Ciphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None
    hsts_max_age: HstsMaxAge | None = None


class ListenerFields(ListenerMutableFields):
    admin_state_up: bool = True
    protocol: ListenerProtocol
    protocol_port: Port
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False


class ListenerSingleCreate(ListenerFields):
    default_pool: PoolSingleCreate | None = None
    l7policies: list[L7PolicySingleCreate] | None = None


class ListenerCreate(ListenerFields):
    loadbalancer_id: Uuid
    default_pool_id: Uuid | None = None
    project_id: ProjectId | None = None


class ListenerUpdate(ListenerMutableFields):
    admin_state_up: bool | None = None
    default_pool_id: Uuid | None = None
    hsts_include_subdomains: bool | None = None
    hsts_preload: bool | None = None
