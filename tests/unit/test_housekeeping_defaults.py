"""Housekeeping's defaults that an idle deployment pays for."""

from __future__ import annotations

from services.housekeeping.settings import HousekeepingSettings


def test_the_orphan_job_runs_once_a_minute_by_default() -> None:
    """A pass appends a request to the store for good and reads every amphora's files and row:
    an idle deployment pays for it once a minute, not every 10 s (issue #20)."""
    assert HousekeepingSettings().orphans.interval == 60.0
