"""``fulcrum identity``: users, projects and role grants in the identity file, without editing
YAML by hand.

    fulcrum identity project add NAME [--description TEXT]
    fulcrum identity user add NAME (--password P | --password-file F) [--project P --role R ...]
    fulcrum identity role add USER --project P --role R [--role R ...]
    fulcrum identity list [--json]

The edits themselves are ``identity_edits.py`` (imported only when this command runs). The
file is ``<state-dir>/identity.yaml`` (``--file`` to name another); it is written
atomically, and a running API re-reads it on its next request. Names are unique in the
default domain; a command that would duplicate one, or names a missing project or user,
changes nothing and exits 1 with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.api.auth.identity import IdentityConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``identity`` subcommands on ``parser``."""
    parser.add_argument("--state-dir", default=".state")
    parser.add_argument("--file", default=None, help="default: <state-dir>/identity.yaml")
    sub = parser.add_subparsers(dest="identity_command", required=True)
    project = sub.add_parser("project", help="projects").add_subparsers(
        dest="project_command", required=True
    )
    project_add = project.add_parser("add", help="add a project")
    project_add.add_argument("name")
    project_add.add_argument("--description", default="")
    user = sub.add_parser("user", help="users").add_subparsers(dest="user_command", required=True)
    user_add = user.add_parser("add", help="add a user, optionally with roles on a project")
    user_add.add_argument("name")
    secret = user_add.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password")
    secret.add_argument("--password-file", help="read the password from this file (first line)")
    user_add.add_argument("--project", help="project name or id to grant --role on")
    user_add.add_argument("--role", action="append", default=[], help="repeatable")
    role = sub.add_parser("role", help="role grants").add_subparsers(
        dest="role_command", required=True
    )
    role_add = role.add_parser("add", help="grant roles on a project to a user")
    role_add.add_argument("user", help="user name or id")
    role_add.add_argument("--project", required=True, help="project name or id")
    role_add.add_argument("--role", action="append", required=True, help="repeatable")
    listing = sub.add_parser("list", help="projects, users and their roles")
    listing.add_argument("--json", action="store_true", help="machine-readable")


def _print_table(config: IdentityConfig) -> None:
    from deploy.local.identity_edits import describe

    described = describe(config)
    print("projects:")
    for project in described["projects"]:  # type: ignore[attr-defined]
        print(f"  {project['name']}  {project['id']}")
    print("users:")
    for user in described["users"]:  # type: ignore[attr-defined]
        grants = "; ".join(f"{p}: {', '.join(r)}" for p, r in user["roles"].items())
        print(f"  {user['name']}  {user['id']}  {grants}")


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    lines = Path(args.password_file).read_text().splitlines()
    return lines[0] if lines else ""


def run_identity(args: argparse.Namespace) -> int:
    """Apply one ``fulcrum identity`` command; 0 done, 1 refused (one line on stderr)."""
    from deploy.local.identity_edits import (
        IdentityCommandError,
        add_project,
        add_user,
        describe,
        grant,
    )
    from services.api.auth.identity import load, save

    path = Path(args.file) if args.file else Path(args.state_dir) / "identity.yaml"
    try:
        if not path.exists():
            raise IdentityCommandError(f"{path} does not exist (start the stack once: make up)")
        config = load(path)
        if args.identity_command == "list":
            if args.json:
                print(json.dumps(describe(config), indent=2))
            else:
                _print_table(config)
            return 0
        if args.identity_command == "project":
            config = add_project(config, args.name, args.description)
        elif args.identity_command == "user":
            config = add_user(config, args.name, _password(args), args.project, tuple(args.role))
        else:
            config = grant(config, args.user, args.project, tuple(args.role))
    except (IdentityCommandError, OSError, ValueError) as exc:
        print(f"fulcrum identity: {exc}", file=sys.stderr)
        return 1
    save(path, config)
    return 0
