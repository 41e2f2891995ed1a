"""``CliSession``, which the CLI tests run their commands in: each command's own output and
failure, never its neighbour's, and no argument the shell would rewrite. No stack: the
endpoint is a closed port, so an API command fails and a local one succeeds."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cli, free_port


async def test_each_command_gets_its_own_output_and_failure() -> None:
    cli = Cli(
        {
            "OS_AUTH_TYPE": "none",
            "OS_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "PYTHONWARNINGS": "ignore",
        }
    )
    listing = ("command", "list", "--group", "openstack.load_balancer.v2", "-f", "value")
    async with cli.session() as session:
        unreachable = await session("loadbalancer", "list", check=False)
        assert unreachable.code == 1 and unreachable.out == ""
        assert "Unable to find a version discovery document" in unreachable.err
        with pytest.raises(AssertionError, match="version discovery"):
            await session("loadbalancer", "list")
        listed = await session(*listing)
        assert listed.code == 0 and listed.err == ""
        assert "'loadbalancer status show'" in listed.out
        with pytest.raises(ValueError, match="not a plain argument"):
            await session("loadbalancer", "show", "my lb")
        assert (await session(*listing)).out == listed.out
    assert cli.calls == [["loadbalancer", "list"]] * 2 + [list(listing)] * 2
