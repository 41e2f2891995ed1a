"""The HAProxy configuration of a load balancer for one amphora: rendered from the LB's state,
the agent's paths and where its TLS files are, with the list of those files at the end."""

from __future__ import annotations

import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from libs.common.agent_contract import AgentInfo
from libs.common.domain.model import LoadBalancerState
from services.provisioner.certificates import manifest_line
from services.provisioner.rendering import (
    ListenerTlsFiles,
    LogOffload,
    PoolTlsFiles,
    RenderContext,
    maxconn_cap_for_fd_limit,
    render_haproxy,
)


@dataclass(frozen=True)
class TlsContext:
    """Where the delivered TLS files are, for the render context, and their names."""

    listener_tls: Mapping[str, ListenerTlsFiles]
    pool_tls: Mapping[str, PoolTlsFiles]
    files: frozenset[str]


def render_config(
    state: LoadBalancerState,
    info: AgentInfo,
    tls: TlsContext | None = None,
    logs: LogOffload | None = None,
    threads: int | None = None,
) -> str:
    """The whole configuration, its TLS files listed in a trailing comment (the manifest);
    ``logs``: where HAProxy sends its logs (none when None); ``threads``: HAProxy's threads
    (None: one per CPU)."""
    context = RenderContext(
        stats_socket=info.stats_socket,
        state_dir=str(Path(info.certs_dir).parent),
        maxconn_cap=maxconn_cap_for_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        listener_tls=tls.listener_tls if tls else {},
        pool_tls=tls.pool_tls if tls else {},
        external_check_command=info.external_check_command,
        logs=logs or LogOffload(),
        threads=threads,
    )
    return render_haproxy(state, context) + manifest_line(tls.files if tls else ())
