"""Which connections a service's Postgres pool opens at start (PostgresSettings)."""

from __future__ import annotations

import pytest

from libs.common.settings import PostgresSettings
from services.api.settings import ApiSettings


def test_the_whole_pool_opens_at_start_unless_min_pool_is_set() -> None:
    assert PostgresSettings(max_pool=12).whole_pool_at_start().min_pool == 12
    assert PostgresSettings(min_pool=1, max_pool=12).whole_pool_at_start().min_pool == 1


def test_an_operators_min_pool_from_the_environment_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FULCRUM_API_POSTGRES__DSN", "postgresql://u@db:5432/fulcrum")
    assert ApiSettings().postgres.whole_pool_at_start().min_pool == 10
    monkeypatch.setenv("FULCRUM_API_POSTGRES__MIN_POOL", "2")
    assert ApiSettings().postgres.whole_pool_at_start().min_pool == 2
