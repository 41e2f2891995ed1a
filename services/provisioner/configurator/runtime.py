"""Member changes through HAProxy's runtime API (planned in domain/runtime_changes.py)."""

from __future__ import annotations

from collections.abc import Sequence

from libs.common.agent_contract import NamedServerChange, NewServer, ServerState
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from services.provisioner.domain.runtime_changes import ServerOp


def server_change(op: ServerOp) -> NamedServerChange:
    """The agent's wording of ``op``."""
    if op.delete:
        return NamedServerChange(backend=op.backend, server=op.server, delete=True)
    if op.add_address is not None and op.add_port is not None:
        added = NewServer(address=op.add_address, port=op.add_port, options=list(op.add_options))
        return NamedServerChange(backend=op.backend, server=op.server, add=added)
    return NamedServerChange(
        backend=op.backend,
        server=op.server,
        weight=op.weight,
        state=ServerState(op.state) if op.state else None,
    )


async def apply_server_ops(
    client: AmphoraAgentClient, ops: Sequence[ServerOp], rendered: str
) -> None:
    """Make ``ops`` through the runtime API, then store ``rendered`` for the next reload: one
    request to the agent."""
    await client.runtime_changes([server_change(op) for op in ops], rendered)
