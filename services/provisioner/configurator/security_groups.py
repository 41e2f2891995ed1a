"""A load balancer's VIP security groups on its amphorae: the groups' ingress rules rendered
into the nft table ``inet fulcrum_sg`` (rendering/security_groups.py) and pushed to the agent.

Pushed with every configuration push once the LB has ever named groups (``vip_sg_ids`` not
None: an emptied list removes the filter), and again whenever a group's rules change
(handlers/security_groups.py). Only amphorae that own their network namespace (a VIP
interface: netns and docker drivers) can filter; an LB with groups on any other amphora is
refused here (the API refuses it first on such a deployment), never silently left open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from libs.common.domain.model import LoadBalancerState
from libs.common.errors import FulcrumError
from libs.common.events.security_group import SecurityGroupRule
from services.provisioner.configurator.agents import AgentConnections
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.rendering.security_groups import render_sg_ruleset

# The rules of the groups named (in any order; groups that do not exist have none).
RuleSource = Callable[[Sequence[str]], Awaitable[list[SecurityGroupRule]]]


class SecurityGroupsUnenforceable(FulcrumError):
    """The LB names security groups but its amphora cannot filter its VIPs."""


def vip_addresses(state: LoadBalancerState) -> list[str]:
    """Every VIP of the LB, additional VIPs included (the filter covers each)."""
    lb = state.loadbalancer
    if lb is None or not lb.vip_address:
        return []
    return list(lb.all_vips())


class SecurityGroupPush:
    def __init__(self, agents: AgentConnections, rules: RuleSource | None) -> None:
        self._agents = agents
        self._rules = rules

    async def render(self, state: LoadBalancerState) -> str | None:
        """The ruleset of the LB's groups, or None when it never named any."""
        lb = state.loadbalancer
        if lb is None or lb.vip_sg_ids is None or self._rules is None:
            return None
        rules = await self._rules(lb.vip_sg_ids) if lb.vip_sg_ids else None
        return render_sg_ruleset(vip_addresses(state), rules)

    async def push(self, state: LoadBalancerState, handle: AmphoraHandle) -> None:
        """Apply the LB's filter on one amphora; raises SecurityGroupsUnenforceable when it
        names groups and the amphora has no VIP interface, and the agent client's errors."""
        ruleset = await self.render(state)
        if ruleset is None:
            return
        lb = state.loadbalancer
        assert lb is not None
        if not (await self._agents.info(handle)).has_vip_interface:
            if lb.vip_sg_ids:
                raise SecurityGroupsUnenforceable(
                    f"amphora {handle.amphora_id} cannot filter its VIPs (no VIP interface); "
                    f"load balancer {lb.id} names security groups {list(lb.vip_sg_ids)}"
                )
            return
        await self._agents.client(handle).apply_security_groups(ruleset)
