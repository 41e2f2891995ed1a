"""Every table has one owner: DDL appears only in libs/common/schema, each table created once."""

from __future__ import annotations

import re
from pathlib import Path

from libs.common.schema import MIGRATIONS

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "libs" / "common" / "schema"
_DDL = re.compile(r"\b(CREATE|ALTER|DROP)\s+(TABLE|INDEX|UNIQUE INDEX|VIEW|TRIGGER)\b|to_regclass")


def test_migrations_are_numbered_from_one_with_distinct_names() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len({m.name for m in MIGRATIONS}) == len(MIGRATIONS)


def test_the_baseline_creates_each_table_once() -> None:
    created = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", MIGRATIONS[0].sql)
    assert len(created) == len(set(created)) == 24


def test_no_module_outside_the_schema_package_holds_ddl() -> None:
    offenders = [
        f"{path.relative_to(REPO)}: {match.group(0)}"
        for root in ("libs", "services")
        for path in sorted((REPO / root).rglob("*.py"))
        if SCHEMA_DIR not in path.parents
        for match in _DDL.finditer(path.read_text())
    ]
    assert offenders == []
