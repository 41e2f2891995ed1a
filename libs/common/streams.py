"""Stream ids, ``<category>-<aggregate id>`` (``loadbalancer-<uuid>``): built and split only here.

A ``StreamId`` is the stored string itself, so it goes wherever a stream id is stored, sent or
compared, and it knows its two parts.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

_SEPARATOR: Final = "-"


class StreamCategory(StrEnum):
    """The kinds of streams: lowercase, singular, without the separator."""

    LOADBALANCER = "loadbalancer"
    LOADBALANCER_STATUS = "lbstatus"
    AMPHORA = "amphora"
    SECRET = "secret"
    QUOTA = "quota"
    HOUSEKEEPING = "housekeeping"
    FLAVOR = "flavor"
    FLAVOR_PROFILE = "flavorprofile"
    AVAILABILITY_ZONE = "availabilityzone"
    AVAILABILITY_ZONE_PROFILE = "availabilityzoneprofile"
    SECURITY_GROUP = "securitygroup"

    @property
    def prefix(self) -> str:
        """What every stream id of this category starts with (for SQL that joins on ids)."""
        return f"{self}{_SEPARATOR}"


class StreamId(str):
    """``<category>-<aggregate id>``, immutable. The aggregate id is any non-empty text (an
    availability zone's name too); the category is a ``StreamCategory``.

    Raises ValueError for an unknown category or an empty aggregate id.
    """

    __slots__ = ()

    def __new__(cls, category: str, aggregate_id: str) -> StreamId:
        known = StreamCategory(category)
        if not aggregate_id:
            raise ValueError(f"stream id of category {known} without an aggregate id")
        return super().__new__(cls, f"{known.prefix}{aggregate_id}")

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]
        return self.category, self.aggregate_id

    @classmethod
    def parse(cls, text: str) -> StreamId:
        """The stream id ``text`` spells; raises ValueError when it is not one."""
        category, separator, aggregate_id = text.partition(_SEPARATOR)
        if not separator:
            raise ValueError(f"{text!r} is not <category>-<aggregate id>")
        return cls(category, aggregate_id)

    @property
    def category(self) -> StreamCategory:
        return StreamCategory(self.partition(_SEPARATOR)[0])

    @property
    def aggregate_id(self) -> str:
        return self.partition(_SEPARATOR)[2]

    @classmethod
    def loadbalancer(cls, lb_id: str) -> StreamId:
        """A load balancer with its listeners, pools and members (the consistency boundary)."""
        return cls(StreamCategory.LOADBALANCER, lb_id)

    @classmethod
    def loadbalancer_status(cls, lb_id: str) -> StreamId:
        """A load balancer's observed operating statuses (health's writes), apart from its intent
        and provisioning so that status flaps never lengthen the ``loadbalancer`` stream."""
        return cls(StreamCategory.LOADBALANCER_STATUS, lb_id)

    @classmethod
    def amphora(cls, amphora_id: str) -> StreamId:
        return cls(StreamCategory.AMPHORA, amphora_id)

    @classmethod
    def secret(cls, resource_id: str) -> StreamId:
        """A key manager secret or container (both share the category)."""
        return cls(StreamCategory.SECRET, resource_id)

    @classmethod
    def quota(cls, project_id: str) -> StreamId:
        """A project's quota limits."""
        return cls(StreamCategory.QUOTA, project_id)

    @classmethod
    def housekeeping(cls, run_id: str) -> StreamId:
        """One housekeeping run's requests."""
        return cls(StreamCategory.HOUSEKEEPING, run_id)

    @classmethod
    def security_group(cls, group_id: str) -> StreamId:
        """A Neutron security group with its rules."""
        return cls(StreamCategory.SECURITY_GROUP, group_id)
