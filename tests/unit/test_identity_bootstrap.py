"""Identity bootstrap by API replicas starting at once over one identity file."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from services.api.auth.identity import load_or_bootstrap


def _admin_project(path: str) -> str:
    config = load_or_bootstrap(Path(path), "pw")
    (project,) = config.projects
    return project.id


def test_replicas_bootstrapping_at_once_agree_on_the_admin_project(tmp_path: Path) -> None:
    path = tmp_path / "identity.yaml"
    with ProcessPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(_admin_project, [str(path)] * 8))
    assert len(set(ids)) == 1
    assert load_or_bootstrap(path, "other").projects[0].id == ids[0]
    assert path.stat().st_mode & 0o777 == 0o600
