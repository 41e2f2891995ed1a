"""The agent's nft runner against the real kernel, in a namespace of its own: atomic apply,
JSON listing, refusal with nft's words (nothing applied), delete of an absent table."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.amphora.adapters.nftables import Nftables, NftablesRefused, default_nft_binary


@pytest.fixture
def in_namespace() -> Iterator[str]:
    """A fresh network namespace (removed afterwards); the runner's binary is wrapped in
    ``ip netns exec`` so that nft runs there, as it does in an amphora's namespace."""
    name = f"nftrun-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
        assert not os.path.exists(f"/run/netns/{name}")


def _runner(tmp_path: Path, netns: str) -> Nftables:
    wrapper = tmp_path / "nft"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {default_nft_binary()} "$@"\n')
    wrapper.chmod(0o755)
    return Nftables(wrapper)


def test_apply_list_refuse_delete(tmp_path: Path, in_namespace: str) -> None:
    nft = _runner(tmp_path, in_namespace)

    async def scenario() -> None:
        assert await nft.available() is None
        assert await nft.list_table("inet", "fulcrum_test") is None
        await nft.apply(
            "table inet fulcrum_test {\n  set s { type ipv4_addr; elements = { 198.18.0.1 } }\n}\n"
        )
        items = await nft.list_table("inet", "fulcrum_test")
        assert items is not None
        sets = [i["set"] for i in items if "set" in i]
        assert sets[0]["name"] == "s" and sets[0]["elem"] == ["198.18.0.1"]
        # One bad line: the whole transaction is refused, the good element is not added.
        with pytest.raises(NftablesRefused) as refused:
            await nft.apply(
                "add element inet fulcrum_test s { 198.18.0.2 }\n"
                "add element inet fulcrum_test nosuchset { 198.18.0.3 }\n"
            )
        assert "nosuchset" in (refused.value.detail or "")
        items = await nft.list_table("inet", "fulcrum_test")
        assert items is not None
        assert [i["set"]["elem"] for i in items if "set" in i] == [["198.18.0.1"]]
        with pytest.raises(NftablesRefused):
            await nft.check("table inet fulcrum_test { chain c { bogus } }")
        await nft.delete_table("inet", "fulcrum_test")
        await nft.delete_table("inet", "fulcrum_test")
        assert await nft.list_table("inet", "fulcrum_test") is None

    asyncio.run(scenario())


def test_every_udp_golden_script_passes_nft_check(tmp_path: Path, in_namespace: str) -> None:
    """The agent's scripts for the golden UDP examples are accepted by the kernel's nft."""
    nft = _runner(tmp_path, in_namespace)
    scripts = sorted((Path(__file__).parents[2] / "unit" / "golden" / "udp").glob("*.nft"))
    assert len(scripts) >= 4

    async def scenario() -> None:
        for script in scripts:
            await nft.check(script.read_text())
            await nft.apply(script.read_text())  # really applied too, then removed
        await nft.delete_table("inet", "fulcrum_udp")

    asyncio.run(scenario())
