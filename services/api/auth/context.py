"""Who is calling: the one place where a request's project, roles and admin flag are known."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    """Set by the auth middleware on every request that needs it (``request["context"]``)."""

    project_id: str | None
    user_id: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    is_admin: bool = False
    # Octavia's noauth: quotas are not enforced.
    enforce_quotas: bool = True

    def has_role(self, *names: str) -> bool:
        return bool(self.roles.intersection(names))
