"""Operator-configured identity: domains, projects, users (hashed passwords) and role grants.

Loaded from a YAML file (``identity.yaml``); a bootstrap admin is created from settings when
the file does not exist yet, under an exclusive file lock, so API replicas starting at once
over one file all read the same admin project. Passwords are stored only as scrypt hashes.
``IdentityFile`` re-reads the file when it changes on disk (``fulcrum identity`` edits it with
``save``), so a running API sees new users, projects and grants without a restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import uuid
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field

_log = logging.getLogger(__name__)
_SCRYPT: Final = {"n": 2**14, "r": 8, "p": 1}
DEFAULT_DOMAIN_ID: Final = "default"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$<salt hex>$<hash hex>`` of ``password``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` result."""
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), dklen=32, **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Domain(_Model):
    id: str
    name: str


class Project(_Model):
    id: str
    name: str
    domain_id: str = DEFAULT_DOMAIN_ID
    description: str = ""


class User(_Model):
    id: str
    name: str
    domain_id: str = DEFAULT_DOMAIN_ID
    password_hash: str
    # project id -> role names on that project
    roles: dict[str, list[str]] = Field(default_factory=dict)


class IdentityConfig(_Model):
    domains: list[Domain] = Field(
        default_factory=lambda: [Domain(id=DEFAULT_DOMAIN_ID, name="Default")]
    )
    projects: list[Project] = Field(default_factory=list)
    users: list[User] = Field(default_factory=list)

    def domain(self, id_: str | None = None, name: str | None = None) -> Domain | None:
        return next(
            (d for d in self.domains if (id_ and d.id == id_) or (name and d.name == name)), None
        )

    def project(
        self, *, id_: str | None = None, name: str | None = None, domain_id: str | None = None
    ) -> Project | None:
        for p in self.projects:
            if id_ is not None and p.id == id_:
                return p
            if name is not None and p.name == name and domain_id in (None, p.domain_id):
                return p
        return None

    def user(
        self, *, id_: str | None = None, name: str | None = None, domain_id: str | None = None
    ) -> User | None:
        for u in self.users:
            if id_ is not None and u.id == id_:
                return u
            if name is not None and u.name == name and domain_id in (None, u.domain_id):
                return u
        return None


def _hex_id() -> str:
    return uuid.uuid4().hex


def bootstrap_config(admin_password: str, project_name: str = "admin") -> IdentityConfig:
    """An admin user with the admin role on an admin project, plus a demo member."""
    admin_project = Project(id=_hex_id(), name=project_name, description="Bootstrap project")
    return IdentityConfig(
        projects=[admin_project],
        users=[
            User(
                id=_hex_id(),
                name="admin",
                password_hash=hash_password(admin_password),
                roles={admin_project.id: ["admin", "member", "reader"]},
            )
        ],
    )


def load_or_bootstrap(path: Path, admin_password: str) -> IdentityConfig:
    """Read ``path``; when missing, write a bootstrap config there first (mode 0600).

    Safe against concurrent first starts: the check and the write run under an exclusive lock
    on ``<path>.lock``, so every process reads the config the first one wrote.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            config = bootstrap_config(admin_password)
            save(path, config)
            return config
        return load(path)


def load(path: Path) -> IdentityConfig:
    """The identity file at ``path`` (ValueError when it is not a valid one)."""
    data: Any = yaml.safe_load(path.read_text()) or {}
    return IdentityConfig.model_validate(data)


def save(path: Path, config: IdentityConfig) -> None:
    """Write ``config`` to ``path`` atomically (a readers sees the old or the new file), 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    temporary.write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))
    temporary.chmod(0o600)
    os.replace(temporary, path)


class IdentityFile:
    """The identity file as last read; ``current()`` re-reads it when its size or mtime
    changed. An unreadable or invalid new version is logged and the previous one kept."""

    def __init__(self, path: Path, config: IdentityConfig) -> None:
        self._path = path
        self._config = config
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def current(self) -> IdentityConfig:
        signature = self._signature()
        if signature is not None and signature != self._seen:
            self._seen = signature
            try:
                self._config = load(self._path)
            except (OSError, ValueError, yaml.YAMLError) as exc:
                _log.error("identity file %s not reloaded: %s", self._path, exc)
        return self._config
