"""Member bodies: POST, PUT, batch PUT, and the single-create form nested in pools."""

from __future__ import annotations

from services.api.http.schemas._base import (
    Input,
    IpAddress,
    Name,
    Port,
    ProjectId,
    SubnetRef,
    Tags,
    Weight,
)


class MemberFields(Input):
    name: Name = None
    admin_state_up: bool = True
    address: IpAddress
    protocol_port: Port
    weight: Weight | None = None
    backup: bool = False
    subnet_id: SubnetRef | None = None
    monitor_address: IpAddress | None = None
    monitor_port: Port | None = None
    tags: Tags = None
    request_sriov: bool = False


class MemberSingleCreate(MemberFields):
    """A member inside a pool of a single-call create."""


class MemberCreate(MemberFields):
    project_id: ProjectId | None = None


class MemberUpdate(Input):
    name: Name = None
    admin_state_up: bool | None = None
    weight: Weight | None = None
    backup: bool | None = None
    monitor_address: IpAddress | None = None
    monitor_port: Port | None = None
    tags: Tags = None


class MembersBatch(Input):
    """``PUT /pools/{id}/members``: the whole wanted member list."""

    members: list[MemberCreate]
