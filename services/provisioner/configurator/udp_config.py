"""The UDP part of a push: the LB's UDP listeners rendered and applied on one amphora.

Sent when the LB has UDP listeners, or when the amphora may still serve some (its info said
so, or this provisioner pushed some to it), so that removing the last one removes them there;
amphorae that never served UDP are not asked.
"""

from __future__ import annotations

from libs.common.agent_contract import AgentInfo
from libs.common.domain.model import LoadBalancerState
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from services.provisioner.rendering.udp import render_udp


class UdpPush:
    """Remembers which amphorae serve UDP listeners (by amphora id)."""

    def __init__(self) -> None:
        self._serving: set[str] = set()

    async def push(
        self, state: LoadBalancerState, client: AmphoraAgentClient, info: AgentInfo
    ) -> None:
        """Apply ``state``'s UDP listeners on the amphora behind ``client`` (``info``: its
        cached info); raises the client's errors."""
        config = render_udp(state)
        amphora = info.amphora_id
        if config.listeners or info.udp_config_sha256 is not None or amphora in self._serving:
            await client.apply_udp(config)
        if config.listeners:
            self._serving.add(amphora)
        else:
            self._serving.discard(amphora)
