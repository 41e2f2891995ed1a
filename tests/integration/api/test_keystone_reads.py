"""The Keystone v3 read subset over raw HTTP with real tokens: users, projects, roles,
domains, /v3/auth/projects and /v3/auth/catalog, Keystone's bodies, texts and RBAC; and the
identity file re-read when it changes (a new user can log in without a restart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.api.auth.identity import (
    IdentityConfig,
    Project,
    User,
    bootstrap_config,
    hash_password,
    save,
)
from services.api.auth.tokens import new_token_key
from tests.integration.api.conftest import Api, MakeApi

DEMO = Project(id="d" * 32, name="demo")
OTHER = Project(id="e" * 32, name="other")


def _identity() -> IdentityConfig:
    config = bootstrap_config("admin-pw")
    alice = User(
        id="a1" * 16,
        name="alice",
        password_hash=hash_password("alice-pw"),
        roles={DEMO.id: ["member", "reader"]},
    )
    bob = User(
        id="b1" * 16,
        name="bob",
        password_hash=hash_password("bob-pw"),
        roles={OTHER.id: ["reader"]},
    )
    return config.model_copy(
        update={"projects": [*config.projects, DEMO, OTHER], "users": [*config.users, alice, bob]}
    )


@pytest.fixture
async def keystone(make_api: MakeApi, tmp_path: Path) -> tuple[Api, Path]:
    path = tmp_path / "identity.yaml"
    save(path, _identity())
    api = await make_api(auth_strategy="keystone", token_keys=new_token_key(), identity_file=path)
    return api, path


async def _token(api: Api, user: str, password: str, project: str | None) -> str:
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {
                "user": {"name": user, "domain": {"name": "Default"}, "password": password}
            },
        }
    }
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    reply = await api.post("/v3/auth/tokens", {"auth": auth}, expect=201)
    return reply.headers["X-Subject-Token"]


def _forbidden(action: str) -> dict[str, Any]:
    message = f"You are not authorized to perform the requested action: identity:{action}."
    return {"error": {"code": 403, "title": "Forbidden", "message": message}}


async def test_admin_reads_everything_with_keystones_shapes(keystone: tuple[Api, Path]) -> None:
    api, _ = keystone
    headers = {"X-Auth-Token": await _token(api, "admin", "admin-pw", "admin")}
    users = (await api.get("/v3/users", headers=headers, expect=200)).body
    assert [u["name"] for u in users["users"]] == ["admin", "alice", "bob"]
    assert users["links"] == {"self": f"{api.base}/v3/users", "previous": None, "next": None}
    alice = next(u for u in users["users"] if u["name"] == "alice")
    assert alice == {
        "id": "a1" * 16,
        "name": "alice",
        "domain_id": "default",
        "enabled": True,
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{api.base}/v3/users/{'a1' * 16}"},
    }
    assert (await api.get("/v3/users?name=bob", headers=headers)).body["users"][0]["name"] == "bob"
    shown = await api.get(f"/v3/users/{alice['id']}", headers=headers, expect=200)
    assert shown.body == {"user": alice}
    missing = await api.get("/v3/users/nobody", headers=headers, expect=404)
    assert missing.body == {
        "error": {"code": 404, "title": "Not Found", "message": "Could not find user: nobody."}
    }
    projects = (await api.get("/v3/projects", headers=headers, expect=200)).body["projects"]
    assert [p["name"] for p in projects] == ["admin", "demo", "other"]
    demo = (await api.get("/v3/projects?name=demo", headers=headers)).body["projects"]
    assert [p["id"] for p in demo] == [DEMO.id]
    assert demo[0]["links"] == {"self": f"{api.base}/v3/projects/{DEMO.id}"}
    assert {"domain_id", "enabled", "is_domain", "parent_id", "description"} <= set(demo[0])
    roles = (await api.get("/v3/roles", headers=headers, expect=200)).body["roles"]
    assert [r["name"] for r in roles] == ["admin", "member", "reader"]
    role = (await api.get("/v3/roles/member", headers=headers, expect=200)).body["role"]
    assert (role["id"], role["name"], role["domain_id"]) == ("member", "member", None)
    await api.get("/v3/roles/nope", headers=headers, expect=404)
    domains = (await api.get("/v3/domains", headers=headers, expect=200)).body["domains"]
    assert [(d["id"], d["name"], d["enabled"]) for d in domains] == [("default", "Default", True)]
    await api.get("/v3/domains/default", headers=headers, expect=200)
    assignments = await api.get(f"/v3/role_assignments?user.id={'a1' * 16}", headers=headers)
    assert assignments.body["role_assignments"] == [
        {
            "role": {"id": role},
            "user": {"id": "a1" * 16},
            "scope": {"project": {"id": DEMO.id}},
            "links": {
                "assignment": f"{api.base}/v3/projects/{DEMO.id}/users/{'a1' * 16}/roles/{role}"
            },
        }
        for role in ("member", "reader")
    ]
    named = await api.get(
        f"/v3/role_assignments?scope.project.id={OTHER.id}&include_names=True", headers=headers
    )
    (bob,) = named.body["role_assignments"]
    assert bob["user"]["name"] == "bob" and bob["role"] == {"id": "reader", "name": "reader"}
    assert bob["scope"]["project"]["name"] == "other"
    missing = await api.get("/v3/projects/nope", headers=headers, expect=404)
    assert missing.body["error"]["message"] == "Could not find project: nope."


async def test_a_member_reads_itself_its_project_and_domain_only(
    keystone: tuple[Api, Path],
) -> None:
    api, _ = keystone
    headers = {"X-Auth-Token": await _token(api, "alice", "alice-pw", "demo")}
    for path, action in (
        ("/v3/users", "list_users"),
        ("/v3/projects", "list_projects"),
        ("/v3/roles", "list_roles"),
        ("/v3/domains", "list_domains"),
        ("/v3/role_assignments", "list_role_assignments"),
        (f"/v3/users/{'b1' * 16}", "get_user"),
        (f"/v3/projects/{OTHER.id}", "get_project"),
        ("/v3/roles/admin", "get_role"),
        (f"/v3/users/{'b1' * 16}/projects", "list_user_projects"),
    ):
        assert (await api.get(path, headers=headers, expect=403)).body == _forbidden(action)
    me = (await api.get(f"/v3/users/{'a1' * 16}", headers=headers, expect=200)).body["user"]
    assert me["name"] == "alice"
    project = (await api.get(f"/v3/projects/{DEMO.id}", headers=headers, expect=200)).body
    assert project["project"]["name"] == "demo"
    mine = (await api.get(f"/v3/users/{me['id']}/projects", headers=headers, expect=200)).body
    assert [p["name"] for p in mine["projects"]] == ["demo"]
    await api.get("/v3/domains/default", headers=headers, expect=200)
    auth_projects = (await api.get("/v3/auth/projects", headers=headers, expect=200)).body
    assert [p["id"] for p in auth_projects["projects"]] == [DEMO.id]
    assert auth_projects["links"]["self"] == f"{api.base}/v3/auth/projects"
    catalog = (await api.get("/v3/auth/catalog", headers=headers, expect=200)).body
    assert {"load-balancer", "network", "identity"} <= {s["type"] for s in catalog["catalog"]}
    assert catalog["links"] == {"self": f"{api.base}/v3/auth/catalog"}


async def test_unscoped_and_missing_tokens(keystone: tuple[Api, Path]) -> None:
    api, _ = keystone
    unscoped = {"X-Auth-Token": await _token(api, "bob", "bob-pw", None)}
    reply = await api.get("/v3/auth/projects", headers=unscoped, expect=200)
    assert [p["id"] for p in reply.body["projects"]] == [OTHER.id]
    reply = await api.get("/v3/auth/catalog", headers=unscoped, expect=403)
    assert reply.body["error"]["message"] == (
        "A project-scoped token is required to produce a service catalog."
    )
    for path in (
        "/v3/users",
        "/v3/auth/projects",
        "/v3/roles",
        "/v3/domains/default",
        "/v2.0/floatingips",
        "/v2.0/networks",
        "/v2.0/ports/x",
    ):
        reply = await api.get(path, headers={"X-Auth-Token": "forged"}, expect=401)
        assert reply.body["error"]["title"] == "Unauthorized"


async def test_a_user_added_to_the_file_logs_in_without_a_restart(
    keystone: tuple[Api, Path],
) -> None:
    api, path = keystone
    carol = User(
        id="c1" * 16,
        name="carol",
        password_hash=hash_password("carol-pw"),
        roles={DEMO.id: ["member"]},
    )
    config = _identity()
    save(path, config.model_copy(update={"users": [*config.users, carol]}))
    headers = {"X-Auth-Token": await _token(api, "carol", "carol-pw", "demo")}
    me = await api.get(f"/v3/users/{carol.id}", headers=headers, expect=200)
    assert me.body["user"]["name"] == "carol"
    path.write_text("users: [not valid")  # a broken edit keeps the last good version
    await _token(api, "carol", "carol-pw", "demo")
