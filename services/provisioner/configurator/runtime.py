"""Member changes through HAProxy's runtime API (planned in domain/runtime_changes.py)."""

from __future__ import annotations

from collections.abc import Sequence

from libs.common.agent_contract import NewServer, ServerState
from services.provisioner.adapters.agent_client import AmphoraAgentClient
from services.provisioner.domain.runtime_changes import ServerOp


async def apply_server_ops(
    client: AmphoraAgentClient, ops: Sequence[ServerOp], rendered: str
) -> None:
    """Make ``ops`` through the runtime API, then store ``rendered`` for the next reload."""
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
    await client.apply_config(rendered, reload=False, check_later=True)
