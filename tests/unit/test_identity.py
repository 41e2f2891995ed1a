"""Identity pieces: password hashing, signed tokens, and Octavia's RBAC table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.api.auth.identity import bootstrap_config, hash_password, verify_password
from services.api.auth.tokens import InvalidToken, TokenSigner

KEY = b"k" * 32


def test_password_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret", stored)
    assert not verify_password("S3cret", stored)
    assert not verify_password("s3cret", "garbage")


def _claims(signer: TokenSigner, now: datetime | None = None):  # type: ignore[no-untyped-def]
    return signer.new_claims(
        user_id="u",
        user_name="alice",
        domain_id="default",
        project_id="p",
        project_name="demo",
        roles=("member",),
        now=now,
    )


def test_token_round_trip_on_any_replica_with_the_key() -> None:
    token = TokenSigner(KEY).issue(_claims(TokenSigner(KEY)))
    claims = TokenSigner(KEY).validate(token)  # another replica, same key
    assert (claims.user_name, claims.project_id, claims.roles) == ("alice", "p", ("member",))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # forged signature
        lambda t: "x" + t,  # tampered claims
        lambda t: t.split(".")[0],  # no signature
        lambda t: "",
    ],
)
def test_forged_or_malformed_tokens_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    signer = TokenSigner(KEY)
    with pytest.raises(InvalidToken):
        signer.validate(mangle(signer.issue(_claims(signer))))


def test_a_token_from_another_key_is_refused() -> None:
    other = TokenSigner(b"o" * 32)
    with pytest.raises(InvalidToken, match="signature"):
        TokenSigner(KEY).validate(other.issue(_claims(other)))


def test_expired_token_is_refused() -> None:
    signer = TokenSigner(KEY, lifetime=timedelta(seconds=5))
    token = signer.issue(_claims(signer, now=datetime.now(UTC) - timedelta(seconds=10)))
    with pytest.raises(InvalidToken, match="expired"):
        signer.validate(token)


def test_bootstrap_admin_has_admin_on_its_project() -> None:
    config = bootstrap_config("pw")
    admin = config.user(name="admin")
    assert admin is not None and verify_password("pw", admin.password_hash)
    assert "admin" in admin.roles[config.projects[0].id]
