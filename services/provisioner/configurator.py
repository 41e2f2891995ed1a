"""Pushes a load balancer's rendered HAProxy configuration to its amphorae' agents.

Holds the provisioner's client certificate (issued by the deployment CA at start) and one agent
client per amphora. The configuration is always the whole LB, rendered by a pure function of
its state; the agent validates it and reloads HAProxy without dropping connections.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from pathlib import Path

from libs.common.domain.model import LoadBalancerState
from libs.common.pki import DeploymentCA, write_private_file
from services.amphora.contract import AgentInfo, NewServer, ServerState
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.handlers.runtime_changes import ServerOp
from services.provisioner.rendering import RenderContext, maxconn_cap_for_fd_limit, render_haproxy


class Configurator:
    def __init__(self, ca: DeploymentCA, directory: Path) -> None:
        self._ca = ca
        issued = ca.issue_client_cert("fulcrum-provisioner", validity_days=365)
        self._cert = directory / "provisioner-client.pem"
        self._key = directory / "provisioner-client.key"
        write_private_file(self._cert, issued.cert_pem, mode=0o644)
        write_private_file(self._key, issued.key_pem)
        self._clients: dict[str, AmphoraAgentClient] = {}
        self._infos: dict[str, AgentInfo] = {}

    def client(self, handle: AmphoraHandle) -> AmphoraAgentClient:
        """The (cached) client of one amphora's agent; it checks the amphora id in the cert."""
        key = f"{handle.amphora_id}@{handle.agent_url}"
        client = self._clients.get(key)
        if client is None:
            client = AmphoraAgentClient(
                handle.agent_url,
                self._ca.cert_path,
                self._cert,
                self._key,
                server_name=handle.amphora_id,
            )
            self._clients[key] = client
        return client

    async def info(self, handle: AmphoraHandle) -> AgentInfo:
        key = f"{handle.amphora_id}@{handle.agent_url}"
        info = self._infos.get(key)
        if info is None:
            info = await self.client(handle).info()
            self._infos[key] = info
        return info

    def render(self, state: LoadBalancerState, info: AgentInfo) -> str:
        context = RenderContext(
            stats_socket=info.stats_socket,
            state_dir=str(Path(info.certs_dir).parent),
            maxconn_cap=maxconn_cap_for_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        )
        return render_haproxy(state, context)

    async def push(
        self,
        state: LoadBalancerState,
        handle: AmphoraHandle,
        pair: Sequence[AmphoraHandle] = (),
    ) -> None:
        """Render and apply on one amphora; raises the agent client's InfrastructureErrors.

        ``pair`` is every amphora of the LB (for ACTIVE_STANDBY peers).
        """
        info = await self.info(handle)
        await self.client(handle).apply_config(self.render(state, info))

    async def rendered(self, state: LoadBalancerState, handle: AmphoraHandle) -> str:
        return self.render(state, await self.info(handle))

    async def apply_runtime(
        self, handle: AmphoraHandle, ops: Sequence[ServerOp], rendered: str
    ) -> None:
        """Make ``ops`` through the runtime API, then store ``rendered`` for the next reload."""
        client = self.client(handle)
        for op in ops:
            if op.delete:
                await client.server_change(op.backend, op.server, delete=True)
            elif op.add_address is not None and op.add_port is not None:
                await client.server_change(
                    op.backend,
                    op.server,
                    add=NewServer(
                        address=op.add_address, port=op.add_port, options=list(op.add_options)
                    ),
                )
            else:
                await client.server_change(
                    op.backend,
                    op.server,
                    weight=op.weight,
                    state=ServerState(op.state) if op.state else None,
                )
        await client.apply_config(rendered, reload=False)

    async def forget(self, amphora_id: str) -> None:
        for key in [k for k in self._clients if k.startswith(f"{amphora_id}@")]:
            await self._clients.pop(key).close()
            self._infos.pop(key, None)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
