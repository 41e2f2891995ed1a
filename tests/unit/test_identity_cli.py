"""``fulcrum identity``: projects, users and grants written to the identity file, refusals
that change nothing, and ``list`` without password hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.local.cli import main
from services.api.auth.identity import bootstrap_config, load, save, verify_password


@pytest.fixture
def state(tmp_path: Path) -> Path:
    save(tmp_path / "identity.yaml", bootstrap_config("admin-pw"))
    return tmp_path


def identity(state: Path, *args: str) -> int:
    return main(["identity", "--state-dir", str(state), *args])


def test_project_user_and_grants(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert identity(state, "project", "add", "demo", "--description", "Demo") == 0
    assert (
        identity(
            state,
            "user",
            "add",
            "alice",
            "--password",
            "pw",
            "--project",
            "demo",
            "--role",
            "member",
        )
        == 0
    )
    assert identity(state, "role", "add", "alice", "--project", "demo", "--role", "reader") == 0
    assert identity(state, "role", "add", "alice", "--project", "admin", "--role", "reader") == 0
    config = load(state / "identity.yaml")
    demo = config.project(name="demo")
    alice = config.user(name="alice")
    assert demo is not None and demo.description == "Demo" and len(demo.id) == 32
    assert alice is not None and verify_password("pw", alice.password_hash)
    admin_project = config.project(name="admin")
    assert admin_project is not None
    assert alice.roles == {demo.id: ["member", "reader"], admin_project.id: ["reader"]}
    assert (state / "identity.yaml").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert identity(state, "list", "--json") == 0
    out = capsys.readouterr().out
    described = json.loads(out)
    assert [p["name"] for p in described["projects"]] == ["admin", "demo"]
    users = {u["name"]: u["roles"] for u in described["users"]}
    assert users["alice"] == {"demo": ["member", "reader"], "admin": ["reader"]}
    assert "scrypt" not in out and "password" not in out
    assert identity(state, "list") == 0
    assert "alice" in capsys.readouterr().out


def test_password_file(state: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pw.txt"
    secret.write_text("from-file\n")
    assert identity(state, "user", "add", "bob", "--password-file", str(secret)) == 0
    bob = load(state / "identity.yaml").user(name="bob")
    assert bob is not None and verify_password("from-file", bob.password_hash) and bob.roles == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("project", "add", "admin"), "project 'admin' exists"),
        (("user", "add", "admin", "--password", "x"), "user 'admin' exists"),
        (
            ("user", "add", "carol", "--password", "x", "--project", "nope", "--role", "member"),
            "no project 'nope'",
        ),
        (
            ("user", "add", "carol", "--password", "x", "--project", "admin"),
            "--project and --role go together",
        ),
        (("role", "add", "nobody", "--project", "admin", "--role", "member"), "no user 'nobody'"),
    ],
)
def test_refusals_change_nothing(
    state: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    before = (state / "identity.yaml").read_text()
    assert identity(state, *args) == 1
    assert capsys.readouterr().err == f"fulcrum identity: {message}\n"
    assert (state / "identity.yaml").read_text() == before


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert identity(tmp_path / "none", "list") == 1
    err = capsys.readouterr().err
    assert err.startswith("fulcrum identity: ") and err.count("\n") == 1
