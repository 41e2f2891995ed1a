"""What the use cases need from storage, as Protocols (PostgresViews implements them)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

import asyncpg

from services.api.domain.kinds import Kind


class Located(Protocol):
    """Where a resource lives: its LB stream, parent and owning project."""

    @property
    def id(self) -> str: ...
    @property
    def lb_id(self) -> str: ...
    @property
    def parent_id(self) -> str: ...
    @property
    def project_id(self) -> str: ...


class ResourceLocator(Protocol):
    async def get(self, kind: Kind, resource_id: str) -> Located | None: ...


class AddressBook(Protocol):
    async def free_addresses(
        self, subnet_id: str, first: str, last: str, reserved: list[str], count: int
    ) -> list[str]: ...

    async def address_taken(self, subnet_id: str, address: str) -> bool: ...


class QuotaStore(Protocol):
    async def quota_limits(self, project_id: str) -> dict[str, int | None]: ...

    def locked_project(
        self, project_id: str
    ) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def count_live(
        self, conn: asyncpg.Connection, project_id: str, resources: list[str]
    ) -> dict[str, int]: ...


class Offering(Protocol):
    """A flavor or availability zone as a load balancer create sees it."""

    @property
    def enabled(self) -> bool: ...
    @property
    def provider_name(self) -> str: ...
    @property
    def data(self) -> str: ...


class Offerings(Protocol):
    async def flavor_offering(self, flavor_id: str) -> Offering | None: ...

    async def availability_zone_offering(self, name: str) -> Offering | None: ...


class Views(ResourceLocator, AddressBook, QuotaStore, Offerings, Protocol):
    """Everything the write use cases read."""

    async def count_pool_members(self, pool_id: str) -> int: ...
