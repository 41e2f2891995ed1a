"""Pool bodies: POST, PUT and the single-create form (a full definition or a name reference)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from libs.common.domain.model import LbAlgorithm, PoolProtocol, SessionPersistenceType
from services.api.http.schemas._base import (
    Ciphers,
    ContainerRef,
    Input,
    Name,
    ProjectId,
    Tags,
    Text255,
    Uuid,
)
from services.api.http.schemas.healthmonitor import HealthMonitorSingleCreate
from services.api.http.schemas.member import MemberSingleCreate


class TlsVersion(StrEnum):
    SSLV3 = "SSLv3"
    TLSV1 = "TLSv1"
    TLSV1_1 = "TLSv1.1"
    TLSV1_2 = "TLSv1.2"
    TLSV1_3 = "TLSv1.3"


class AlpnProtocol(StrEnum):
    H2 = "h2"
    HTTP_1_1 = "http/1.1"
    HTTP_1_0 = "http/1.0"


class SessionPersistenceInput(Input):
    type: SessionPersistenceType
    cookie_name: Text255 | None = None
    persistence_timeout: Annotated[int, Field(ge=0)] | None = None
    persistence_granularity: Text255 | None = None


class PoolTlsFields(Input):
    tls_enabled: bool = False
    tls_container_ref: ContainerRef | None = None
    ca_tls_container_ref: ContainerRef | None = None
    crl_container_ref: ContainerRef | None = None
    tls_ciphers: Ciphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None


class PoolFields(PoolTlsFields):
    name: Name = None
    description: Name = None
    admin_state_up: bool = True
    session_persistence: SessionPersistenceInput | None = None
    tags: Tags = None


class PoolCreate(PoolFields):
    protocol: PoolProtocol
    lb_algorithm: LbAlgorithm
    listener_id: Uuid | None = None
    loadbalancer_id: Uuid | None = None
    project_id: ProjectId | None = None


class PoolSingleCreate(PoolFields):
    """In a single-call create a pool with only a ``name`` refers to its full definition."""

    protocol: PoolProtocol | None = None
    lb_algorithm: LbAlgorithm | None = None
    healthmonitor: HealthMonitorSingleCreate | None = None
    members: list[MemberSingleCreate] | None = None


class PoolUpdate(Input):
    name: Name = None
    description: Name = None
    admin_state_up: bool | None = None
    lb_algorithm: LbAlgorithm | None = None
    session_persistence: SessionPersistenceInput | None = None
    tags: Tags = None
    tls_enabled: bool | None = None
    tls_container_ref: ContainerRef | None = None
    ca_tls_container_ref: ContainerRef | None = None
    crl_container_ref: ContainerRef | None = None
    tls_ciphers: Ciphers | None = None
    tls_versions: list[TlsVersion] | None = None
    alpn_protocols: list[AlpnProtocol] | None = None
