"""The one owner of every table: Fulcrum's schema as ordered, numbered migrations.

Every service calls ``upgrade(pool)`` at start (``libs.common.service.postgres_ctx``), before
it touches a table; operators may run it alone first::

    python -m libs.common.schema upgrade --dsn postgresql://...
    python -m libs.common.schema version --dsn postgresql://...

When the database is up to date, ``upgrade`` costs one query and takes no lock. It refuses a
database migrated by a newer release (``SchemaTooNew``). See ``migrator`` for the guarantees.

Adding a migration: write ``v<NNN>_<name>.py`` beside ``v001_baseline.py`` with its literal
``SQL`` (never generated from Python tables that may change later), and append
``Migration(<NNN>, "<name>", v<NNN>_<name>.SQL)`` to ``MIGRATIONS`` in ``migrations.py``.
Applied steps are never edited: a change is a new step. Its test upgrades a database made at
the previous version (tests/integration/schema/).
"""

from __future__ import annotations

from libs.common.schema.migrations import MIGRATIONS, Migration
from libs.common.schema.migrator import SchemaTooNew, current_version, upgrade

__all__ = ["MIGRATIONS", "Migration", "SchemaTooNew", "current_version", "upgrade"]
