"""The one runner of the ``nft`` CLI inside the amphora: rulesets applied atomically, read back.

Every nftables user in the agent (UDP load balancing in table ``fulcrum_udp``, the VIP
security groups) goes through ``Nftables``: a ruleset text is applied with ``nft -f -`` in one
kernel transaction (all of it or none of it), tables are listed as JSON (``nft -j``), deleted
(absent is fine), and a ruleset can be checked without being applied (``nft -c``). nft's own
words come back in ``NftablesRefused`` (a 400 to the agent's caller: the ruleset is wrong) or
``NftablesUnavailable`` (500: no binary, or the kernel lacks nf_tables).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from libs.common.errors import InfrastructureError, ValidationFailed

# Bound on one nft invocation; rulesets of a load balancer apply in milliseconds.
_TIMEOUT: Final = 20.0


class NftablesRefused(ValidationFailed):
    """nft refused a ruleset (syntax, unknown object, kernel refusal); ``detail`` is its output."""


class NftablesUnavailable(InfrastructureError):
    """No usable nft here (binary missing, or nf_tables missing from the kernel)."""


def default_nft_binary() -> Path:
    """nft on PATH, else /usr/sbin/nft."""
    return Path(shutil.which("nft") or "/usr/sbin/nft")


@dataclass(frozen=True)
class Nftables:
    """Runs ``binary`` in the agent's network namespace (the one the agent entered)."""

    binary: Path

    async def _run(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        try:
            process = await asyncio.create_subprocess_exec(
                str(self.binary),
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise NftablesUnavailable(f"cannot run {self.binary}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), _TIMEOUT
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise NftablesUnavailable(
                f"nft {' '.join(args)} did not finish in {_TIMEOUT}s"
            ) from None
        code = process.returncode or 0
        return code, out.decode(errors="replace"), err.decode(errors="replace").strip()

    async def apply(self, ruleset: str) -> None:
        """Apply ``ruleset`` (nft script text) in one transaction; NftablesRefused on error."""
        code, _, err = await self._run("-f", "-", stdin=ruleset)
        if code != 0:
            raise _failure("nft refused the ruleset", err)

    async def check(self, ruleset: str) -> None:
        """Like ``apply`` but nothing changes (``nft -c``)."""
        code, _, err = await self._run("-c", "-f", "-", stdin=ruleset)
        if code != 0:
            raise _failure("nft refused the ruleset", err)

    async def list_table(self, family: str, table: str) -> list[dict[str, Any]] | None:
        """The table's objects as nft's JSON items (metainfo left out); None when absent."""
        code, out, err = await self._run("-j", "list", "table", family, table)
        if code != 0:
            if "No such file or directory" in err:
                return None
            raise _failure(f"nft could not list table {family} {table}", err)
        items: list[dict[str, Any]] = json.loads(out).get("nftables", [])
        return [item for item in items if "metainfo" not in item]

    async def delete_table(self, family: str, table: str) -> None:
        """Remove the table and everything in it (absent is fine)."""
        code, _, err = await self._run("delete", "table", family, table)
        if code != 0 and "No such file or directory" not in err:
            raise _failure(f"nft could not delete table {family} {table}", err)

    async def available(self) -> str | None:
        """None when nft runs and the kernel has nf_tables, else why not."""
        try:
            code, _, err = await self._run("list", "tables")
        except NftablesUnavailable as exc:
            return str(exc)
        return None if code == 0 else err or f"nft exited with {code}"


def _failure(message: str, output: str) -> NftablesRefused | NftablesUnavailable:
    if "Operation not permitted" in output or "Protocol not supported" in output:
        return NftablesUnavailable(f"{message}: {output}")
    return NftablesRefused(message, detail=output)
