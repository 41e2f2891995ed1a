"""What the amphora image ships: its package, the libs modules it imports and the wheels of its
own dependencies, which together run the agent (no control-plane code, no signing CA)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from deploy.images import AMPHORA_IMAGE, IMAGES, copy_sources, requirements_for

AMPHORA = next(spec for spec in IMAGES if spec.name == AMPHORA_IMAGE)

# Imports every module of the agent with only the copied source and the installed wheels on
# sys.path (-S: no .pth files, so the editable install of this checkout cannot fill a gap);
# prints every module then loaded and the top-level names in site-packages they came from.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
sys.path[:0] = sys.argv[1:]
import services.amphora
for module in pkgutil.walk_packages(services.amphora.__path__, "services.amphora."):
    importlib.import_module(module.name)
site = sys.argv[2] + "/"
files = [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())]
wheels = {f[len(site) :].split("/")[0].split(".")[0] for f in files if f.startswith(site)}
print(json.dumps({"modules": sorted(sys.modules), "wheels": sorted(wheels)}))
"""


def _loaded_by_the_agent(app: Path) -> dict[str, list[str]]:
    copy_sources(AMPHORA.sources, app)
    result = subprocess.run(
        [sys.executable, "-S", "-c", _IMPORT_ALL, str(app), sysconfig.get_paths()["purelib"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def _with_dependencies(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install (normalised names), theirs included."""
    found: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in found:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        found.add(name)
        pending += [Requirement(r) for r in metadata.requires(requirement.name) or []]
    return found


def test_the_amphora_ships_its_package_and_only_the_libs_modules_it_imports() -> None:
    assert AMPHORA.sources[0] == "services/amphora"
    assert "libs/common/pki.py" not in AMPHORA.sources
    assert {"libs/common/private_files.py", "libs/common/certificate_checks.py"} <= set(
        AMPHORA.sources
    )
    others = ("deploy", "services/api", "services/provisioner", "services/health")
    assert not [source for source in AMPHORA.sources if source.startswith(others)]


def test_the_amphora_source_and_wheels_run_the_agent_alone(tmp_path: Path) -> None:
    loaded = _loaded_by_the_agent(tmp_path / "app")

    ours = [m for m in loaded["modules"] if m.split(".")[0] in ("libs", "services", "deploy")]
    assert "libs.common.pki" not in ours
    assert all(
        m.startswith(("libs.", "services.amphora")) or m in ("libs", "services") for m in ours
    )
    shipped = _with_dependencies(requirements_for(AMPHORA))
    owners = metadata.packages_distributions()
    missing = {
        top: owners.get(top)
        for top in loaded["wheels"]
        if not {d.lower().replace("_", "-") for d in owners.get(top, [])} & shipped
    }
    assert not missing, f"the agent loads modules of distributions the image lacks: {missing}"
    assert not {"asyncpg", "nats-py", "supervisor", "pgserver"} & shipped
