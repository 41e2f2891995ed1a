"""The VIP security groups of this amphora: the provisioner's ruleset for table
``inet fulcrum_sg`` (services/provisioner/rendering/security_groups.py), applied atomically
through the nft runner.

The agent applies only rulesets confined to that table: every top-level statement must
declare, delete or define ``inet fulcrum_sg``, so a push can never touch the UDP table or
anything else in the namespace.
"""

from __future__ import annotations

from typing import Final

from libs.common.errors import ValidationFailed
from services.amphora.adapters.nftables import Nftables

TABLE: Final = "fulcrum_sg"
FAMILY: Final = "inet"
_TOP_LEVEL: Final = frozenset(
    {
        f"table {FAMILY} {TABLE}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
        "}",
    }
)


class VipSecurityGroups:
    """Applies and removes the amphora's security-group filter."""

    def __init__(self, nft: Nftables) -> None:
        self._nft = nft

    async def apply(self, ruleset: str) -> None:
        """Replace the table by ``ruleset``; ValidationFailed when it reaches outside the
        table, NftablesRefused when nft refuses it (the previous filter stays)."""
        for line in ruleset.splitlines():
            if line and not line[0].isspace() and line.strip() not in _TOP_LEVEL:
                raise ValidationFailed(
                    f"security group rulesets may only define table {FAMILY} {TABLE}",
                    detail=f"refused statement: {line[:200]}",
                )
        await self._nft.apply(ruleset)

    async def remove(self) -> None:
        await self._nft.delete_table(FAMILY, TABLE)
