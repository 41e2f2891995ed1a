"""The hosts driver's routing (services/provisioner/drivers/hosts.py) over in-memory host
drivers: placement through the scheduler, handles tagged with their host, unreachable hosts
out of sight, deletes forgiven only on unreachable hosts."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from libs.common.errors import InfrastructureError
from services.provisioner.drivers import AmphoraHandle, AmphoraSpec, Leftovers
from services.provisioner.drivers.hosts import HostsDriver


class MemoryHost:
    """An in-memory host: amphorae are dict entries; ``up`` says whether it is reachable."""

    name = "memory"

    def __init__(self) -> None:
        self.running: dict[str, AmphoraHandle] = {}
        self.up = True
        self.fail_deletes = False

    async def reachable(self) -> bool:
        return self.up

    async def prepare(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        handle = AmphoraHandle(spec.amphora_id, spec.lb_id, "memory", "c", "https://x", "ip")
        return self.running.setdefault(spec.amphora_id, handle)

    async def delete(self, amphora_id: str) -> None:
        if self.fail_deletes:
            raise InfrastructureError("engine does not answer")
        self.running.pop(amphora_id, None)

    async def list(self) -> list[AmphoraHandle]:
        return list(self.running.values())

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        return self.running.get(amphora_id)

    async def leftovers(self) -> Sequence[str]:
        return []

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        return await self.list(), {}

    async def reachable_hosts(self) -> None:
        return None


def two_hosts(policy: str = "soft") -> tuple[HostsDriver, MemoryHost, MemoryHost]:
    h1, h2 = MemoryHost(), MemoryHost()
    return HostsDriver({"h1": h1, "h2": h2}, policy), h1, h2  # type: ignore[arg-type]


async def test_a_pair_is_placed_apart_and_handles_name_their_host() -> None:
    driver, h1, h2 = two_hosts()
    master = await driver.ensure(AmphoraSpec("m", "lb", role="MASTER"))
    backup = await driver.ensure(
        AmphoraSpec("b", "lb", role="BACKUP", peer_hosts=frozenset({master.host}))
    )
    assert (master.host, backup.host) == ("h1", "h2")
    assert await driver.ensure(AmphoraSpec("m", "lb")) == master  # found, not placed again
    assert sorted((h.amphora_id, h.host) for h in await driver.list()) == [
        ("b", "h2"),
        ("m", "h1"),
    ]
    single = await driver.ensure(AmphoraSpec("s", "lb2"))
    assert single.host == "h1"  # 1 and 1: the first host
    assert set(h1.running) == {"m", "s"} and set(h2.running) == {"b"}
    assert await driver.get("b") == backup  # found on its host, named
    assert await driver.get("gone") is None


async def test_an_unreachable_host_is_out_of_sight_and_takes_nothing_new() -> None:
    driver, h1, h2 = two_hosts()
    await driver.ensure(AmphoraSpec("m", "lb", role="MASTER"))
    h1.up = False
    assert await driver.list() == [] and await driver.reachable_hosts() == {"h2"}
    placed = await driver.ensure(
        AmphoraSpec("m2", "lb", role="MASTER", peer_hosts=frozenset({"h2"}))
    )
    assert placed.host == "h2"  # soft: degraded, beside its peer
    with pytest.raises(InfrastructureError, match="anti-affinity"):
        await two_hosts("hard")[0].ensure(
            AmphoraSpec("x", "lb", peer_hosts=frozenset({"h1", "h2"}))
        )


async def test_a_delete_is_forgiven_only_on_an_unreachable_host() -> None:
    driver, h1, h2 = two_hosts()
    await driver.ensure(AmphoraSpec("a", "lb"))
    h1.fail_deletes = True
    with pytest.raises(InfrastructureError):
        await driver.delete("a")
    h1.up = False
    await driver.delete("a")  # logged: reaped when the host is back
    assert "a" in h1.running
