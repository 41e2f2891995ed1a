"""The ``hosts`` driver: amphorae on several hosts, one driver per host behind one protocol.

Each call goes to the amphora's host: ``ensure`` of a new amphora places it with the scheduler
(domain/placement.py: the least-loaded reachable host, away from the hosts of its LB's other
amphorae, ``spec.peer_hosts``); ``list`` and ``leftovers`` cover the hosts that can be reached
now and tag every handle with its host; ``delete`` asks every host (idempotent), and a host
that cannot be reached is forgiven (its amphora is reaped when it comes back: the store says
DELETED, the reconciliation of that host deletes it). A host is reachable when its driver says
so (``Reachable``: the netns host's uplinks are up) and lists its amphorae without an error
(a docker engine that answers). Any provisioner replica can drive any host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Final, Protocol, runtime_checkable

from libs.common.errors import FulcrumError, InfrastructureError
from services.provisioner.domain.placement import HostLoad, Policy, place
from services.provisioner.drivers import AmphoraDriver, AmphoraHandle, AmphoraSpec, Leftovers

log = logging.getLogger(__name__)

DRIVER_NAME: Final = "hosts"


@runtime_checkable
class Reachable(Protocol):
    """A host driver that can tell whether its host is reachable at all."""

    async def reachable(self) -> bool: ...


class HostsDriver:
    """One ``AmphoraDriver`` per host (name -> driver, in the settings' order)."""

    name = DRIVER_NAME

    def __init__(self, hosts: Mapping[str, AmphoraDriver], policy: Policy) -> None:
        if not hosts:
            raise ValueError("the hosts driver needs at least one host")
        self.hosts = dict(hosts)
        self._policy = policy

    async def survey(self) -> dict[str, list[AmphoraHandle] | None]:
        """Each host's amphorae (tagged with the host), None for a host not reachable now."""
        names = list(self.hosts)
        found = await asyncio.gather(*(self._survey(name) for name in names))
        return dict(zip(names, found, strict=True))

    async def _survey(self, name: str) -> list[AmphoraHandle] | None:
        driver = self.hosts[name]
        try:
            if isinstance(driver, Reachable) and not await driver.reachable():
                return None
            return [dataclasses.replace(h, host=name) for h in await driver.list()]
        except FulcrumError as exc:
            log.warning("amphora host %s: not reachable: %s", name, exc)
            return None

    async def reachable_hosts(self) -> set[str]:
        return {name for name, handles in (await self.survey()).items() if handles is not None}

    async def ensure(self, spec: AmphoraSpec) -> AmphoraHandle:
        """The running amphora, or a new one on the host the scheduler picks; raises
        InfrastructureError when no host may take it."""
        survey = await self.survey()
        for handles in survey.values():
            for handle in handles or ():
                if handle.amphora_id == spec.amphora_id:
                    return handle
        loads = [
            HostLoad(name, handles is not None, len(handles or ()))
            for name, handles in survey.items()
        ]
        placement = place(loads, spec.peer_hosts, self._policy)
        if placement.host is None:
            raise InfrastructureError(f"amphora {spec.amphora_id} not placed: {placement.reason}")
        if placement.degraded:
            log.warning(
                "amphora %s of lb %s: on host %s with its peer (no other live host; "
                "soft anti-affinity)",
                spec.amphora_id,
                spec.lb_id,
                placement.host,
            )
        handle = await self.hosts[placement.host].ensure(spec)
        log.info("amphora %s: placed on host %s", spec.amphora_id, placement.host)
        return dataclasses.replace(handle, host=placement.host)

    async def delete(self, amphora_id: str) -> None:
        """Delete it wherever it is; a failure on a host not reachable is logged, not raised."""
        names = list(self.hosts)
        results = await asyncio.gather(
            *(self.hosts[name].delete(amphora_id) for name in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception) or await self._survey(name) is not None:
                    raise result
                log.warning("amphora %s: not deleted on unreachable host %s", amphora_id, name)

    async def list(self) -> list[AmphoraHandle]:
        return [h for handles in (await self.survey()).values() for h in handles or ()]

    async def get(self, amphora_id: str) -> AmphoraHandle | None:
        return next((h for h in await self.list() if h.amphora_id == amphora_id), None)

    async def list_with_leftovers(self) -> tuple[Sequence[AmphoraHandle], Leftovers]:
        """Every reachable host's leftovers, with the LB each names."""
        running = await self.list()
        reachable = await self.reachable_hosts()
        found: dict[str, str | None] = {}
        for name in self.hosts:
            if name in reachable:
                found.update((await self.hosts[name].list_with_leftovers())[1])
        return running, found

    async def leftovers(self) -> Sequence[str]:
        return list((await self.list_with_leftovers())[1])

    async def prepare(self) -> None:
        await asyncio.gather(*(driver.prepare() for driver in self.hosts.values()))

    async def close(self) -> None:
        for driver in self.hosts.values():
            await driver.close()
