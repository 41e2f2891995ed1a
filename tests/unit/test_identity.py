"""Identity pieces: password hashing, Fernet tokens (rotation, forgery, expiry), and Octavia's
RBAC table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from libs.common.errors import ConfigurationError
from services.api.auth.identity import bootstrap_config, hash_password, verify_password
from services.api.auth.tokens import InvalidToken, TokenSigner, new_token_key, parse_token_keys

KEY = new_token_key()
OLD = new_token_key()


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
    token = TokenSigner([KEY]).issue(_claims(TokenSigner([KEY])))
    claims = TokenSigner([KEY]).validate(token)  # another replica, same key
    assert (claims.user_name, claims.project_id, claims.roles) == ("alice", "p", ("member",))
    assert len(claims.audit_ids) == 1 and "alice" not in token  # the payload is encrypted


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # forged signature
        lambda t: "x" + t,  # tampered claims
        lambda t: t[: len(t) // 2],  # truncated: no signature
        lambda t: "",
    ],
)
def test_forged_or_malformed_tokens_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    signer = TokenSigner([KEY])
    with pytest.raises(InvalidToken):
        signer.validate(mangle(signer.issue(_claims(signer))))


def test_a_token_from_another_key_is_refused() -> None:
    other = TokenSigner([new_token_key()])
    with pytest.raises(InvalidToken, match="forged"):
        TokenSigner([KEY]).validate(other.issue(_claims(other)))


def test_rotation_keeps_old_tokens_until_their_key_is_removed() -> None:
    before = TokenSigner([OLD])
    old_token = before.issue(_claims(before))
    rotated = TokenSigner([KEY, OLD])  # the new key in front, the old one kept
    assert rotated.validate(old_token).user_name == "alice"
    new_token = rotated.issue(_claims(rotated))
    assert TokenSigner([KEY]).validate(new_token).user_name == "alice"  # the first encrypts
    with pytest.raises(InvalidToken):
        TokenSigner([KEY]).validate(old_token)  # the old key removed from the set
    with pytest.raises(InvalidToken):
        before.validate(new_token)


@pytest.mark.parametrize(
    "keys",
    ["", " , ", "short", "k" * 32, f"{KEY},nope"],
    ids=["empty", "blank", "short", "not-base64", "one-bad"],
)
def test_token_keys_must_be_fernet_keys(keys: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_token_keys(keys)


def test_token_keys_are_newest_first() -> None:
    assert parse_token_keys(f" {KEY} ,{OLD}") == (KEY, OLD)


def test_expired_token_is_refused() -> None:
    signer = TokenSigner([KEY], lifetime=timedelta(seconds=5))
    token = signer.issue(_claims(signer, now=datetime.now(UTC) - timedelta(seconds=10)))
    with pytest.raises(InvalidToken, match="expired"):
        signer.validate(token)


def test_bootstrap_admin_has_admin_on_its_project() -> None:
    config = bootstrap_config("pw")
    admin = config.user(name="admin")
    assert admin is not None and verify_password("pw", admin.password_hash)
    assert "admin" in admin.roles[config.projects[0].id]
