"""What the images ship: the amphora's source is its package and the libs modules it imports,
which run on their own (no control-plane code, no signing CA)."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

from deploy.images import AMPHORA_IMAGE, IMAGES, copy_sources

AMPHORA_SOURCES = next(spec.sources for spec in IMAGES if spec.name == AMPHORA_IMAGE)

# Imports every module of the agent with only the copied source and the installed wheels on
# sys.path (-S: no .pth files, so the editable install of this checkout cannot fill a gap).
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
sys.path[:0] = sys.argv[1:]
import services.amphora
for module in pkgutil.walk_packages(services.amphora.__path__, "services.amphora."):
    importlib.import_module(module.name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("libs", "services", "deploy")))))
"""


def test_the_amphora_ships_its_package_and_only_the_libs_modules_it_imports() -> None:
    assert AMPHORA_SOURCES[0] == "services/amphora"
    shared = [source for source in AMPHORA_SOURCES if source.startswith("libs/")]
    assert "libs/common/pki.py" not in shared
    assert {"libs/common/private_files.py", "libs/common/certificate_checks.py"} <= set(shared)
    assert not any(
        source.startswith(("deploy", "services/api", "services/provisioner"))
        for source in AMPHORA_SOURCES
    )


def test_the_amphora_source_imports_on_its_own(tmp_path: Path) -> None:
    copy_sources(AMPHORA_SOURCES, tmp_path / "app")
    site_packages = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [sys.executable, "-S", "-c", _IMPORT_ALL, str(tmp_path / "app"), site_packages],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "libs.common.pki" not in loaded
    assert not [name for name in loaded if name.startswith("deploy")]
    assert all(
        name.startswith(("libs", "services.amphora")) or name == "services" for name in loaded
    )
