"""HTTP handlers of the agent's VIP and VRRP endpoints (contract: `services.amphora` docstring).

An amphora without a VIP interface (its VIPs need no plumbing, e.g. loopback addresses) answers
GET /v1/vrrp with ``interface: null`` and refuses the other requests with 409.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ValidationError

from libs.common.agent_contract import API_PREFIX, VipAddress, VrrpConfig, VrrpStatus
from libs.common.errors import Conflict, ValidationFailed
from services.amphora.adapters.keepalived import KeepalivedVrrp

_NO_INTERFACE = VrrpStatus.without_interface()


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=model.model_dump_json(), content_type="application/json"
    )


class VrrpHandlers:
    def __init__(self, vrrp: KeepalivedVrrp | None) -> None:
        self.vrrp = vrrp

    def routes(self) -> list[web.RouteDef]:
        prefix = API_PREFIX
        return [
            web.get(f"{prefix}/vrrp", self.status),
            web.put(f"{prefix}/vrrp/config", self.put_config),
            web.delete(f"{prefix}/vrrp", self.delete),
            web.put(f"{prefix}/vip", self.plug),
            web.delete(f"{prefix}/vip/{{address}}", self.unplug),
        ]

    def _require(self) -> KeepalivedVrrp:
        if self.vrrp is None:
            raise Conflict("this amphora has no VIP interface")
        return self.vrrp

    async def status(self, request: web.Request) -> web.Response:
        if self.vrrp is None:
            return _json(_NO_INTERFACE)
        return _json(await self.vrrp.status())

    async def put_config(self, request: web.Request) -> web.Response:
        vrrp = self._require()
        try:
            body = VrrpConfig.model_validate_json(await request.read())
        except ValidationError as exc:
            raise ValidationFailed("invalid request body", detail=str(exc)) from None
        await vrrp.apply(body.config, body.virtual_addresses)
        return _json(await vrrp.status(), status=202)

    async def delete(self, request: web.Request) -> web.Response:
        await self._require().stop()
        return web.Response(status=204)

    async def plug(self, request: web.Request) -> web.Response:
        vrrp = self._require()
        try:
            body = VipAddress.model_validate_json(await request.read())
        except ValidationError as exc:
            raise ValidationFailed("invalid request body", detail=str(exc)) from None
        await vrrp.plug_vip(body.address)
        return _json(await vrrp.status())

    async def unplug(self, request: web.Request) -> web.Response:
        vrrp = self._require()
        try:
            address = VipAddress(address=request.match_info["address"]).address
        except ValidationError as exc:
            raise ValidationFailed("invalid address", detail=str(exc)) from None
        await vrrp.unplug_vip(address)
        return web.Response(status=204)
