"""Keystone tokens against real API replicas on one Postgres: key rotation without logging
anyone out, a removed key's tokens refused, revocation seen by every replica, forged and
expired tokens refused, password brute force answered 429 by every replica (the failures
counted in Postgres), and no version banner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.api.auth.identity import User, bootstrap_config, hash_password, save
from services.api.auth.tokens import TokenSigner, new_token_key
from tests.integration.api.conftest import Api, MakeApi

OLD, NEW = new_token_key(), new_token_key()
LBS = "/v2/lbaas/loadbalancers"


@pytest.fixture
def identity_file(tmp_path: Path) -> Path:
    config = bootstrap_config("admin-pw")
    project = config.projects[0]
    alice = User(
        id="a1" * 16,
        name="alice",
        password_hash=hash_password("alice-pw"),
        roles={project.id: ["member"]},
    )
    path = tmp_path / "identity.yaml"
    save(path, config.model_copy(update={"users": [*config.users, alice]}))
    return path


def _password(user: str, password: str) -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": "Default"}, "password": password}
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }


async def _login(api: Api, user: str = "alice", password: str = "alice-pw") -> str:
    reply = await api.post("/v3/auth/tokens", _password(user, password), expect=201)
    return reply.headers["X-Subject-Token"]


async def _lists(api: Api, token: str) -> int:
    return (await api.get(LBS, headers={"X-Auth-Token": token})).status


async def test_rotation_keeps_sessions_and_a_removed_key_ends_them(
    make_api: MakeApi, identity_file: Path
) -> None:
    before = await make_api(auth_strategy="keystone", token_keys=OLD, identity_file=identity_file)
    old_token = await _login(before)
    rotated = await make_api(
        auth_strategy="keystone", token_keys=f"{NEW},{OLD}", identity_file=identity_file
    )
    assert await _lists(rotated, old_token) == 200  # nobody logged out by the rotation
    new_token = await _login(rotated)
    removed = await make_api(auth_strategy="keystone", token_keys=NEW, identity_file=identity_file)
    assert await _lists(removed, new_token) == 200
    refused = await removed.get(LBS, headers={"X-Auth-Token": old_token}, expect=401)
    assert refused.body["error"]["code"] == 401
    subject = {"X-Auth-Token": new_token, "X-Subject-Token": old_token}
    await removed.get("/v3/auth/tokens", headers=subject, expect=404)


async def test_forged_and_expired_tokens_are_refused(
    make_api: MakeApi, identity_file: Path
) -> None:
    api = await make_api(auth_strategy="keystone", token_keys=NEW, identity_file=identity_file)
    genuine = await _login(api, "admin", "admin-pw")
    signer = TokenSigner([NEW], lifetime=timedelta(seconds=5))
    claims = signer.new_claims(
        user_id="a1" * 16,
        user_name="alice",
        domain_id="default",
        project_id=None,
        project_name=None,
        roles=("admin",),
        now=datetime.now(UTC) - timedelta(seconds=30),
    )
    expired = signer.issue(claims)
    outsider = TokenSigner([new_token_key()])  # a forger without the deployment's key
    forged = outsider.issue(outsider.new_claims(**{**_claim_fields(claims), "now": None}))
    flipped = genuine[:40] + ("A" if genuine[40] != "A" else "B") + genuine[41:]
    for token in (expired, forged, flipped, "x" * 5000):
        await api.get(LBS, headers={"X-Auth-Token": token}, expect=401)
        subject = {"X-Auth-Token": genuine, "X-Subject-Token": token}
        await api.get("/v3/auth/tokens", headers=subject, expect=404)


def _claim_fields(claims: Any) -> dict[str, Any]:
    return {
        "user_id": claims.user_id,
        "user_name": claims.user_name,
        "domain_id": claims.domain_id,
        "project_id": claims.project_id,
        "project_name": claims.project_name,
        "roles": claims.roles,
    }


async def test_revocation_is_refused_by_every_replica(
    make_api: MakeApi, identity_file: Path
) -> None:
    settings = {"auth_strategy": "keystone", "token_keys": NEW, "identity_file": identity_file}
    one, two = await make_api(**settings), await make_api(**settings)
    token = await _login(one)
    other_session = await _login(one)
    rescoped = (
        await one.post(
            "/v3/auth/tokens",
            {"auth": {"identity": {"methods": ["token"], "token": {"id": token}}}},
            expect=201,
        )
    ).headers["X-Subject-Token"]
    admin = await _login(one, "admin", "admin-pw")
    # Another user may not revoke alice's token; alice may, and so may an admin.
    outsider = await two.delete(
        "/v3/auth/tokens",
        headers={"X-Auth-Token": token, "X-Subject-Token": admin},
        expect=403,
    )
    assert outsider.body["error"]["title"] == "Forbidden"
    await two.delete(
        "/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}, expect=204
    )
    for replica in (one, two):
        await replica.get(LBS, headers={"X-Auth-Token": token}, expect=401)
        await replica.get(LBS, headers={"X-Auth-Token": rescoped}, expect=401)  # made from it
        assert await _lists(replica, other_session) == 200  # alice's other session lives
    again = {"X-Auth-Token": admin, "X-Subject-Token": token}
    await one.delete("/v3/auth/tokens", headers=again, expect=404)
    await one.get("/v3/auth/tokens", headers=again, expect=404)
    await one.delete("/v3/auth/tokens", headers={"X-Subject-Token": admin}, expect=401)
    await one.delete(
        "/v3/auth/tokens",
        headers={"X-Auth-Token": admin, "X-Subject-Token": other_session},
        expect=204,
    )
    await two.get(LBS, headers={"X-Auth-Token": other_session}, expect=401)


async def test_password_brute_force_gets_429_with_retry_after_from_every_replica(
    make_api: MakeApi, identity_file: Path, pg_dsn: str
) -> None:
    settings = {
        "auth_strategy": "keystone",
        "token_keys": NEW,
        "identity_file": identity_file,
        "login_failures_per_user": 3,
        "login_failures_per_address": 5,
        "login_failure_window": 120,
    }
    replicas = [await make_api(**settings) for _ in range(3)]
    for replica in replicas:  # one guess on each replica: the three count together
        await replica.post("/v3/auth/tokens", _password("alice", "guess"), expect=401)
    for replica in replicas:  # refused before the (right) password is checked
        throttled = await replica.post(
            "/v3/auth/tokens", _password("alice", "alice-pw"), expect=429
        )
        assert throttled.body["error"]["code"] == 429
        assert throttled.body["error"]["title"] == "Too Many Requests"
        assert 118 <= int(throttled.headers["Retry-After"]) <= 120
    await _login(replicas[0], "admin", "admin-pw")  # another user from the same address still may
    for replica in replicas[1:]:  # the address's own limit: 5 failures whichever user
        await replica.post("/v3/auth/tokens", _password("nobody", "guess"), expect=401)
    for replica in replicas:
        by_address = await replica.post(
            "/v3/auth/tokens", _password("admin", "admin-pw"), expect=429
        )
        assert int(by_address.headers["Retry-After"]) > 0
    conn = await asyncpg.connect(pg_dsn)
    try:
        # The window slides: 100 s later alice's oldest failure has 20 s left in it...
        await conn.execute("UPDATE login_failures SET failed_at = failed_at - interval '100 s'")
        throttled = await replicas[2].post(
            "/v3/auth/tokens", _password("alice", "alice-pw"), expect=429
        )
        assert 18 <= int(throttled.headers["Retry-After"]) <= 20
        # ... and 30 s after that every failure has left it: alice logs in on any replica.
        await conn.execute("UPDATE login_failures SET failed_at = failed_at - interval '30 s'")
        await _login(replicas[1])
        # A new failure prunes the rows that left the window: only its own two remain.
        await replicas[0].post("/v3/auth/tokens", _password("nobody", "guess"), expect=401)
        assert await conn.fetchval("SELECT count(*) FROM login_failures") == 2
        # Scopes are digests: no user name typed is kept.
        assert await conn.fetchval("SELECT bool_and(length(scope) = 32) FROM login_failures")
    finally:
        await conn.close()


async def _as(conn: asyncpg.Connection, role: str, sql: str) -> None:
    """``sql`` run as ``role`` in a transaction that is rolled back."""
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f"SET LOCAL ROLE {role}")
        await conn.execute(sql)
    finally:
        await tx.rollback()


async def test_only_the_api_role_touches_the_login_failures(pg_dsn: str, api: Api) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        for role in ("fulcrum_provisioner", "fulcrum_health", "fulcrum_housekeeping"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await _as(conn, role, "SELECT * FROM login_failures")
        await _as(conn, "fulcrum_api", "INSERT INTO login_failures (scope) VALUES ('\\x00')")
        await _as(conn, "fulcrum_api", "DELETE FROM login_failures")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await _as(conn, "fulcrum_api", "UPDATE login_failures SET failed_at = now()")
    finally:
        await conn.close()


async def test_no_version_banner_on_any_response(api: Api) -> None:
    for method, path in (("GET", "/"), ("GET", LBS), ("GET", "/nowhere"), ("PATCH", LBS)):
        reply = await api.call(method, path)
        server = reply.headers.get("Server", "")
        assert "Python" not in server and "aiohttp" not in server, (path, server)
