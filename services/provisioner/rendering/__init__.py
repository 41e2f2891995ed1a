"""HAProxy configuration rendering: pure functions from a load balancer's state to haproxy.cfg."""

from __future__ import annotations

from services.provisioner.rendering._escaping import haproxy_escape
from services.provisioner.rendering._viewmodel import RenderError, backend_name, build_view_model
from services.provisioner.rendering.context import (
    DEFAULT_CONNECTION_LIMIT,
    ListenerTlsFiles,
    LogOffload,
    LogTarget,
    Peer,
    PoolTlsFiles,
    RenderContext,
    maxconn_cap_for_fd_limit,
)
from services.provisioner.rendering.haproxy import compile_templates, render_haproxy

__all__ = [
    "DEFAULT_CONNECTION_LIMIT",
    "ListenerTlsFiles",
    "LogOffload",
    "LogTarget",
    "Peer",
    "PoolTlsFiles",
    "RenderContext",
    "RenderError",
    "backend_name",
    "build_view_model",
    "compile_templates",
    "haproxy_escape",
    "maxconn_cap_for_fd_limit",
    "render_haproxy",
]
