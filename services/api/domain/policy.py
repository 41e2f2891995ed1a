"""Who may do what: the request's identity and Octavia's default RBAC rules (spec section 3).

Pure. ``RequestContext`` is what an auth strategy (services/api/http/context.py) derives from
a request; the rules below decide on it and the target's project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from libs.common.errors import DomainError, Forbidden

FORBIDDEN_MESSAGE: Final = "Policy does not allow this request to be performed."

_ADMIN_ROLES: Final = frozenset({"admin", "load-balancer_admin"})
_GLOBAL_READER_ROLES: Final = frozenset({"admin", "load-balancer_global_observer"})
_MEMBER_ROLES: Final = frozenset({"member", "load-balancer_member"})
_READER_ROLES: Final = frozenset({"reader", "load-balancer_observer", *_MEMBER_ROLES})
# Octavia's quota-admin: role admin, or the deprecated load-balancer_quota_admin.
_QUOTA_ADMIN_ROLES: Final = frozenset({"load-balancer_quota_admin"})


class Action(StrEnum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    # Octavia's read-quota (readers of the project, and quota admins) and write-quota.
    READ_QUOTA = "read-quota"
    WRITE_QUOTA = "write-quota"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The caller: its project (None for unscoped), roles and whether it is an admin."""

    project_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    is_admin: bool = False
    user_id: str | None = None

    @property
    def reads_globally(self) -> bool:
        """May list every project's resources (Octavia's ``read-global``)."""
        return self.is_admin or bool(self.roles & _GLOBAL_READER_ROLES)

    @property
    def admin(self) -> bool:
        return self.is_admin or bool(self.roles & _ADMIN_ROLES)

    @property
    def quota_admin(self) -> bool:
        """May read and set every project's quota (Octavia's ``quota-admin``)."""
        return self.admin or bool(self.roles & _QUOTA_ADMIN_ROLES)

    @property
    def reads_quota_globally(self) -> bool:
        """May list every project's quota (Octavia's ``read-quota-global``)."""
        return self.reads_globally or self.quota_admin


def allowed(ctx: RequestContext, action: Action, target_project: str | None) -> bool:
    """Octavia's defaults: admin does anything; owners with member write, with reader read."""
    if ctx.admin:
        return True
    if action is Action.ADMIN:
        return False
    if action in (Action.READ_QUOTA, Action.WRITE_QUOTA):
        if ctx.quota_admin:
            return True
        if action is Action.WRITE_QUOTA:
            return False
        action = Action.READ
    if action is Action.READ and ctx.reads_globally:
        return True
    owner = ctx.project_id is not None and ctx.project_id == target_project
    wanted = _MEMBER_ROLES if action is Action.WRITE else _READER_ROLES
    return owner and bool(ctx.roles & wanted)


def enforce(
    ctx: RequestContext,
    action: Action,
    target_project: str | None,
    *,
    hidden: DomainError | None = None,
) -> None:
    """Raise Forbidden (403) unless ``ctx`` may do ``action`` on ``target_project``.

    With ``hidden`` (a NotFound naming the object), another project's object is hidden: the
    caller gets ``hidden`` (404), as if it did not exist, rather than learning it does.
    """
    if allowed(ctx, action, target_project):
        return
    foreign = ctx.project_id != target_project and not ctx.reads_globally
    if hidden is not None and foreign and action in (Action.READ, Action.WRITE):
        raise hidden
    raise Forbidden(FORBIDDEN_MESSAGE)


def visible_project(ctx: RequestContext, requested: str | None) -> str | None:
    """The project a list is restricted to: the caller's own unless it reads globally.

    Raises Forbidden when a caller that may not read globally has no project or no read role.
    """
    if ctx.reads_globally:
        return requested
    if ctx.project_id is None or not ctx.roles & _READER_ROLES:
        raise Forbidden(FORBIDDEN_MESSAGE)
    return ctx.project_id
