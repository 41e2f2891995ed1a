"""Bearer tokens as Keystone makes them: Fernet under MultiFernet, no storage to validate.

A token is a Fernet token (AES-128-CBC + HMAC-SHA256, ``cryptography``'s implementation) whose
payload names the user, the scoped project, the roles, the expiry and the audit ids. The key
set is ordered: the first key encrypts, every key decrypts, so rotating (a new key in front,
the old one kept) logs nobody out; a token under a key removed from the set is refused.
Revocation is by audit id and shared by every replica (``RevocationList``).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from cryptography.fernet import Fernet, MultiFernet
from cryptography.fernet import InvalidToken as FernetInvalidToken

from libs.common.errors import ConfigurationError, FulcrumError


class InvalidToken(FulcrumError, ValueError):
    """The token is malformed, forged, under an unknown key, expired or revoked (the message
    says which)."""


def new_token_key() -> str:
    """A fresh Fernet key (URL-safe base64 of 32 random bytes)."""
    return Fernet.generate_key().decode()


def parse_token_keys(text: str) -> tuple[str, ...]:
    """The comma-separated Fernet keys of ``text``, newest (the encrypting one) first; raises
    ConfigurationError when there is none or one is not a Fernet key."""
    keys = tuple(part.strip() for part in text.split(",") if part.strip())
    if not keys:
        raise ConfigurationError("no token key: give at least one Fernet key")
    for index, key in enumerate(keys):
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ConfigurationError(
                f"token key #{index + 1} is not a Fernet key (URL-safe base64 of 32 bytes)"
            )
    return keys


def new_audit_id() -> str:
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    user_name: str
    domain_id: str
    project_id: str | None
    project_name: str | None
    roles: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    # This token's own audit id first, then the one of the token it was made from (if any):
    # revoking a token also refuses the tokens made from it.
    audit_ids: tuple[str, ...] = ()


class RevocationList(Protocol):
    """Revoked audit ids, shared by every API replica."""

    async def revoke(self, audit_id: str, expires_at: datetime) -> None:
        """Refuse every token carrying ``audit_id`` (kept until ``expires_at``)."""

    async def any_revoked(self, audit_ids: Sequence[str]) -> bool:
        """True when one of ``audit_ids`` was revoked."""


class TokenSigner:
    """Issues and validates tokens under an ordered key set (see the module docstring)."""

    def __init__(self, keys: Sequence[str], lifetime: timedelta = timedelta(hours=12)) -> None:
        if not keys:
            raise ConfigurationError("no token key: give at least one Fernet key")
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self.lifetime = lifetime

    def issue(self, claims: TokenClaims) -> str:
        payload = {
            "u": claims.user_id,
            "un": claims.user_name,
            "d": claims.domain_id,
            "p": claims.project_id,
            "pn": claims.project_name,
            "r": list(claims.roles),
            "iat": int(claims.issued_at.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
            "a": list(claims.audit_ids),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self._fernet.encrypt_at_time(body, int(claims.issued_at.timestamp())).decode()

    def new_claims(
        self,
        *,
        user_id: str,
        user_name: str,
        domain_id: str,
        project_id: str | None,
        project_name: str | None,
        roles: tuple[str, ...],
        parent_audit_id: str | None = None,
        now: datetime | None = None,
    ) -> TokenClaims:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        audit_ids = (new_audit_id(), *((parent_audit_id,) if parent_audit_id else ()))
        return TokenClaims(
            user_id,
            user_name,
            domain_id,
            project_id,
            project_name,
            roles,
            issued,
            issued + self.lifetime,
            audit_ids,
        )

    def validate(self, token: str, now: datetime | None = None) -> TokenClaims:
        """The claims of a valid, unexpired token (revocation is the caller's check); raises
        InvalidToken."""
        try:
            body = self._fernet.decrypt(token.encode())
        except (FernetInvalidToken, UnicodeEncodeError, TypeError) as exc:
            raise InvalidToken("token is forged, malformed or under an unknown key") from exc
        try:
            data = json.loads(body)
            claims = TokenClaims(
                user_id=data["u"],
                user_name=data["un"],
                domain_id=data["d"],
                project_id=data["p"],
                project_name=data["pn"],
                roles=tuple(data["r"]),
                issued_at=datetime.fromtimestamp(data["iat"], UTC),
                expires_at=datetime.fromtimestamp(data["exp"], UTC),
                audit_ids=tuple(str(a) for a in data["a"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidToken("malformed token") from exc
        if claims.expires_at <= (now or datetime.now(UTC)):
            raise InvalidToken("token expired")
        return claims
