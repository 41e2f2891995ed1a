"""The ordered table of migrations: version ``n`` is the ``n``-th entry, numbered from 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from libs.common.schema import (
    v001_baseline,
    v002_security_groups,
    v003_snapshots,
    v004_member_stats,
    v005_token_revocations,
    v006_service_roles,
    v007_list_order,
    v008_login_failures,
    v009_locked_stream_version,
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: ``sql`` runs in one transaction, recorded as ``version``."""

    version: int
    name: str
    sql: str


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "baseline", v001_baseline.SQL),
    Migration(2, "security_groups", v002_security_groups.SQL),
    Migration(3, "snapshots", v003_snapshots.SQL),
    Migration(4, "member_stats", v004_member_stats.SQL),
    Migration(5, "token_revocations", v005_token_revocations.SQL),
    Migration(6, "service_roles", v006_service_roles.SQL),
    Migration(7, "list_order", v007_list_order.SQL),
    Migration(8, "login_failures", v008_login_failures.SQL),
    Migration(9, "locked_stream_version", v009_locked_stream_version.SQL),
)
