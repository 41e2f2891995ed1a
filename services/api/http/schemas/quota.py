"""Quota body: PUT ``{"quota": {...}}`` (any subset; null means "the default")."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.api.domain.quota_limits import MAX_QUOTA, MIN_QUOTA
from services.api.http.schemas._base import Input

Limit = Annotated[int, Field(ge=MIN_QUOTA, le=MAX_QUOTA)] | None


class QuotaUpdate(Input):
    """-1 is unlimited; ``load_balancer`` and ``health_monitor`` are deprecated aliases."""

    loadbalancer: Limit = None
    load_balancer: Limit = None
    listener: Limit = None
    member: Limit = None
    pool: Limit = None
    healthmonitor: Limit = None
    health_monitor: Limit = None
    l7policy: Limit = None
    l7rule: Limit = None
