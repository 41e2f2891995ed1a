"""The edits ``fulcrum identity`` makes to an identity configuration: add a project, add a
user (hashed password, optional grants), grant roles; and a password-free description.

Pure functions from one ``IdentityConfig`` to the next; each raises ``IdentityCommandError``
(whose message is the one line the command prints) and changes nothing when it cannot apply.
"""

from __future__ import annotations

import uuid

from libs.common.errors import FulcrumError
from services.api.auth.identity import IdentityConfig, Project, User, hash_password


class IdentityCommandError(FulcrumError):
    """A command that cannot apply; its message is the one line printed."""


def _project(config: IdentityConfig, name_or_id: str) -> Project:
    found = config.project(id_=name_or_id) or config.project(name=name_or_id)
    if found is None:
        raise IdentityCommandError(f"no project {name_or_id!r}")
    return found


def _user(config: IdentityConfig, name_or_id: str) -> User:
    found = config.user(id_=name_or_id) or config.user(name=name_or_id)
    if found is None:
        raise IdentityCommandError(f"no user {name_or_id!r}")
    return found


def add_project(config: IdentityConfig, name: str, description: str = "") -> IdentityConfig:
    if config.project(name=name) is not None:
        raise IdentityCommandError(f"project {name!r} exists")
    project = Project(id=uuid.uuid4().hex, name=name, description=description)
    return config.model_copy(update={"projects": [*config.projects, project]})


def add_user(
    config: IdentityConfig,
    name: str,
    password: str,
    project: str | None = None,
    roles: tuple[str, ...] = (),
) -> IdentityConfig:
    if config.user(name=name) is not None:
        raise IdentityCommandError(f"user {name!r} exists")
    if not password:
        raise IdentityCommandError("the password is empty")
    if bool(project) != bool(roles):
        raise IdentityCommandError("--project and --role go together")
    grants = {_project(config, project).id: list(dict.fromkeys(roles))} if project else {}
    user = User(id=uuid.uuid4().hex, name=name, password_hash=hash_password(password), roles=grants)
    return config.model_copy(update={"users": [*config.users, user]})


def grant(
    config: IdentityConfig, user: str, project: str, roles: tuple[str, ...]
) -> IdentityConfig:
    target = _user(config, user)
    project_id = _project(config, project).id
    merged = dict(target.roles)
    merged[project_id] = list(dict.fromkeys([*merged.get(project_id, []), *roles]))
    updated = target.model_copy(update={"roles": merged})
    users = [updated if u.id == target.id else u for u in config.users]
    return config.model_copy(update={"users": users})


def describe(config: IdentityConfig) -> dict[str, object]:
    """Projects and users (with their roles by project name); no password hashes."""
    names = {p.id: p.name for p in config.projects}
    return {
        "projects": [
            {"id": p.id, "name": p.name, "domain_id": p.domain_id} for p in config.projects
        ],
        "users": [
            {
                "id": u.id,
                "name": u.name,
                "roles": {names.get(pid, pid): roles for pid, roles in u.roles.items()},
            }
            for u in config.users
        ],
    }
