"""Octavia's default RBAC rules (reader, member, admin; global observer; quota admin).

Pure: ``allowed(ctx, resource, action, target_project)`` answers from the table below, which
mirrors Octavia's defaults including its deprecated ``load-balancer_*`` roles. ``enforce``
raises Forbidden with Octavia's message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from libs.common.errors import Forbidden
from services.api.auth.context import RequestContext

POLICY_MESSAGE: Final = "Policy does not allow this request to be performed."

Check = Callable[[RequestContext, str | None], bool]


def _owner(ctx: RequestContext, target: str | None) -> bool:
    return ctx.project_id is not None and target is not None and ctx.project_id == target


def _admin(ctx: RequestContext, target: str | None) -> bool:
    return ctx.is_admin or ctx.has_role("admin", "load-balancer_admin")


def _global_observer(ctx: RequestContext, target: str | None) -> bool:
    return _admin(ctx, target) or ctx.has_role("load-balancer_global_observer")


def _quota_admin(ctx: RequestContext, target: str | None) -> bool:
    return _admin(ctx, target) or ctx.has_role("load-balancer_quota_admin")


def _member_and_owner(ctx: RequestContext, target: str | None) -> bool:
    return ctx.has_role("member", "load-balancer_member") and _owner(ctx, target)


def _observer_and_owner(ctx: RequestContext, target: str | None) -> bool:
    return ctx.has_role("reader", "load-balancer_observer") and _owner(ctx, target)


def _any(*checks: Check) -> Check:
    return lambda ctx, target: any(check(ctx, target) for check in checks)


READ: Final = _any(_observer_and_owner, _global_observer, _member_and_owner, _admin)
READ_GLOBAL: Final = _any(_global_observer, _admin)
WRITE: Final = _any(_member_and_owner, _admin)
READ_QUOTA: Final = _any(
    _observer_and_owner, _global_observer, _member_and_owner, _quota_admin, _admin
)
READ_QUOTA_GLOBAL: Final = _any(_global_observer, _quota_admin, _admin)
WRITE_QUOTA: Final = _any(_quota_admin, _admin)
ADMIN: Final = _admin

_LB_CHILDREN: Final = ("listener", "pool", "member", "healthmonitor", "l7policy", "l7rule")

# (resource, action) -> rule. Actions: get_all, get_all-global, get_one, post, put, delete,
# plus extras (get_stats, get_status, put_failover, get_defaults, ...).
RULES: Final[dict[tuple[str, str], Check]] = {
    ("loadbalancer", "get_all"): READ,
    ("loadbalancer", "get_all-global"): READ_GLOBAL,
    ("loadbalancer", "get_one"): READ,
    ("loadbalancer", "get_stats"): READ,
    ("loadbalancer", "get_status"): READ,
    ("loadbalancer", "post"): WRITE,
    ("loadbalancer", "put"): WRITE,
    ("loadbalancer", "delete"): WRITE,
    ("loadbalancer", "put_failover"): ADMIN,
    **{(res, "get_all"): READ for res in _LB_CHILDREN},
    **{(res, "get_all-global"): READ_GLOBAL for res in _LB_CHILDREN},
    **{(res, "get_one"): READ for res in _LB_CHILDREN},
    **{(res, act): WRITE for res in _LB_CHILDREN for act in ("post", "put", "delete")},
    ("listener", "get_stats"): READ,
    ("quota", "get_all"): READ_QUOTA,
    ("quota", "get_all-global"): READ_QUOTA_GLOBAL,
    ("quota", "get_one"): READ_QUOTA,
    ("quota", "get_defaults"): READ_QUOTA,
    ("quota", "put"): WRITE_QUOTA,
    ("quota", "delete"): WRITE_QUOTA,
    ("provider", "get_all"): READ,
    ("flavor", "get_all"): READ,
    ("flavor", "get_one"): READ,
    ("availability-zone", "get_all"): READ,
    ("availability-zone", "get_one"): READ,
    **{
        (res, act): ADMIN
        for res in ("flavor", "availability-zone")
        for act in ("post", "put", "delete")
    },
    **{
        (res, act): ADMIN
        for res in ("flavor-profile", "availability-zone-profile", "amphora")
        for act in (
            "get_all",
            "get_one",
            "post",
            "put",
            "delete",
            "get_stats",
            "put_config",
            "put_failover",
        )
    },
    ("provider-flavor", "get_all"): ADMIN,
    ("provider-availability-zone", "get_all"): ADMIN,
}


def allowed(ctx: RequestContext, resource: str, action: str, target_project: str | None) -> bool:
    """Whether Octavia's default policy lets ``ctx`` do ``action`` on ``resource``.

    ``target_project`` is the project owning the object (for lists and creates: the caller's
    own project). Provider/flavor reads need no ownership: they are not project objects.
    """
    rule = RULES.get((resource, action))
    if rule is None:
        return _admin(ctx, target_project)
    if resource in ("provider", "flavor", "availability-zone") and action.startswith("get"):
        target_project = ctx.project_id
    return rule(ctx, target_project)


def enforce(ctx: RequestContext, resource: str, action: str, target_project: str | None) -> None:
    """Raise Forbidden (403, Octavia's message) unless ``allowed``."""
    if not allowed(ctx, resource, action, target_project):
        raise Forbidden(POLICY_MESSAGE)
