"""Signed bearer tokens: any API replica holding the signing key validates them, no storage.

A token is ``<base64url(json claims)>.<base64url(HMAC-SHA256)>``; claims name the user, the
scoped project, the roles and the expiry. Tampering, another key or expiry make it invalid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from libs.common.errors import ConfigurationError, FulcrumError


class InvalidToken(FulcrumError, ValueError):
    """The token is malformed, forged, or expired (the message says which)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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


class TokenSigner:
    def __init__(self, key: bytes, lifetime: timedelta = timedelta(hours=12)) -> None:
        if len(key) < 16:
            raise ConfigurationError("the token signing key must be at least 16 bytes")
        self._key = key
        self.lifetime = lifetime

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

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
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def new_claims(
        self,
        *,
        user_id: str,
        user_name: str,
        domain_id: str,
        project_id: str | None,
        project_name: str | None,
        roles: tuple[str, ...],
        now: datetime | None = None,
    ) -> TokenClaims:
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        return TokenClaims(
            user_id,
            user_name,
            domain_id,
            project_id,
            project_name,
            roles,
            issued,
            issued + self.lifetime,
        )

    def validate(self, token: str, now: datetime | None = None) -> TokenClaims:
        """The claims of a valid token; raises InvalidToken."""
        body, _, mac = token.partition(".")
        if not body or not mac:
            raise InvalidToken("malformed token")
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidToken("token signature does not match")
        try:
            data = json.loads(_unb64(body))
            claims = TokenClaims(
                user_id=data["u"],
                user_name=data["un"],
                domain_id=data["d"],
                project_id=data["p"],
                project_name=data["pn"],
                roles=tuple(data["r"]),
                issued_at=datetime.fromtimestamp(data["iat"], UTC),
                expires_at=datetime.fromtimestamp(data["exp"], UTC),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidToken("malformed token") from exc
        if claims.expires_at <= (now or datetime.now(UTC)):
            raise InvalidToken("token expired")
        return claims
