"""HTTP handlers of the agent's VIP security groups: ``PUT /v1/security-groups`` takes the
nft ruleset of table ``inet fulcrum_sg`` (text) and applies it atomically; ``DELETE`` removes
the filter. An amphora without a VIP interface (it does not own its network namespace: the
process driver's) refuses both with 409, so a push can never filter a host's traffic."""

from __future__ import annotations

from aiohttp import web

from libs.common.agent_contract import API_PREFIX
from libs.common.errors import Conflict
from services.amphora.adapters.security_groups import VipSecurityGroups


class SecurityGroupHandlers:
    def __init__(self, groups: VipSecurityGroups | None) -> None:
        self.groups = groups

    def routes(self) -> list[web.RouteDef]:
        return [
            web.put(f"{API_PREFIX}/security-groups", self.put),
            web.delete(f"{API_PREFIX}/security-groups", self.delete),
        ]

    def _require(self) -> VipSecurityGroups:
        if self.groups is None:
            raise Conflict("this amphora has no VIP interface: it cannot filter its VIPs")
        return self.groups

    async def put(self, request: web.Request) -> web.Response:
        groups = self._require()
        await groups.apply((await request.read()).decode())
        return web.json_response({"table": "inet fulcrum_sg"})

    async def delete(self, request: web.Request) -> web.Response:
        await self._require().remove()
        return web.Response(status=204)
