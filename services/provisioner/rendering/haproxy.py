"""The pure HAProxy configuration renderer: ``render_haproxy(state, ctx) -> str``.

The state becomes a view model (``_viewmodel``), which jinja2 lays out with the templates in
``templates/``: StrictUndefined, no HTML autoescape, and explicit escaping filters.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

import jinja2

from libs.common.domain.model import LoadBalancerState
from services.provisioner.rendering._escaping import haproxy_escape, logformat_escape, sample_arg
from services.provisioner.rendering._viewmodel import RenderError, build_view_model
from services.provisioner.rendering.context import RenderContext

__all__ = ["RenderError", "compile_templates", "render_haproxy"]

_TEMPLATES: Final = Path(__file__).parent / "templates"
_ROOT_TEMPLATE: Final = "haproxy.cfg.j2"
_TEMPLATE_NAMES: Final = (_ROOT_TEMPLATE, "macros.j2")


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["haproxy_escape"] = haproxy_escape
    environment.filters["logformat_escape"] = logformat_escape
    environment.filters["sample_arg"] = sample_arg
    return environment


def render_haproxy(state: LoadBalancerState, ctx: RenderContext) -> str:
    """The complete haproxy.cfg for ``state`` on the amphora described by ``ctx``.

    Pure and deterministic: the same inputs give the same text. Skips resources in
    PENDING_DELETE; admin-down listeners are left out, admin-down pools and members keep
    their servers `disabled`. Raises RenderError when the state breaks an API invariant or
    needs something ``ctx`` lacks (a PING monitor without ``external_check_command``).
    """
    view = build_view_model(state, ctx)
    return _environment().get_template(_ROOT_TEMPLATE).render(view)


def compile_templates() -> None:
    """Load and compile the templates now (tens of ms), not in the first ``render_haproxy``."""
    environment = _environment()
    for name in _TEMPLATE_NAMES:
        environment.get_template(name)
