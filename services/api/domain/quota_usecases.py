"""Quota administration: set and reset a project's limits (Octavia's write-quota rule).

Reads need no use case: handlers answer from ``quota_view`` and the configured defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from libs.common.events import Metadata
from services.api.domain.policy import Action, RequestContext, enforce
from services.api.domain.quota_limits import (
    QuotaCommand,
    QuotaState,
    ResetQuota,
    SetQuota,
    canonical,
    quota_body,
)


class QuotaRepository(Protocol):
    async def execute(
        self, project_id: str, command: QuotaCommand, metadata: Metadata
    ) -> QuotaState: ...


class QuotaAdministration:
    def __init__(self, repo: QuotaRepository, defaults: Mapping[str, int]) -> None:
        self._repo = repo
        self._defaults = dict(defaults)

    async def set_limits(
        self,
        ctx: RequestContext,
        project_id: str,
        given: Mapping[str, int | None],
        meta: Metadata,
    ) -> dict[str, str | int | None]:
        """Set the limits a PUT sent (aliases allowed); the answer is the effective quota."""
        enforce(ctx, Action.WRITE_QUOTA, project_id)
        state = await self._repo.execute(project_id, SetQuota(canonical(given)), meta)
        return quota_body(project_id, state.limits, self._defaults)

    async def reset(self, ctx: RequestContext, project_id: str, meta: Metadata) -> None:
        """Every limit back to the default, keeping the record (NotFound without one)."""
        enforce(ctx, Action.WRITE_QUOTA, project_id)
        await self._repo.execute(project_id, ResetQuota(), meta)
