"""Unix socket paths that fit: a short path is kept, a long one gets a short stand-in that
does not depend on $TMPDIR being short."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common.errors import ConfigurationError
from libs.common.socket_paths import fitting_path


def test_a_path_within_the_limit_is_kept() -> None:
    path = Path("/srv/fulcrum/amp/master.sock")

    assert fitting_path(path, "fulcrum-x", limit=len(str(path))) == path


def test_a_long_path_gets_the_same_short_stand_in_in_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    limit = len(str(tmp_path)) + 40
    long = Path("/srv") / ("d" * limit) / "zygote.sock"

    short = fitting_path(long, "fulcrum-x", limit=limit, suffix=".sock")

    assert short.parent == tmp_path
    assert short.name.startswith("fulcrum-x-") and short.name.endswith(".sock")
    assert len(str(short)) <= limit
    assert fitting_path(long, "fulcrum-x", limit=limit, suffix=".sock") == short
    assert fitting_path(long.with_name("other.sock"), "fulcrum-x", limit=limit) != short


def test_a_temp_dir_too_long_itself_gives_way_to_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep_tmp = tmp_path / ("t" * 90)
    deep_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(deep_tmp))
    monkeypatch.setattr("tempfile.tempdir", None)

    short = fitting_path(Path("/srv") / ("d" * 120), "fulcrum-x", limit=80)

    assert short.parent == Path("/tmp")


def test_a_limit_nothing_fits_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="shorter TMPDIR"):
        fitting_path(Path("/srv") / ("d" * 120), "fulcrum-x", limit=10)
