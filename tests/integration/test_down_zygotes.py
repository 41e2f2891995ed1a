"""`fulcrum down` stops the zygotes of a cluster's amphora hosts too (a provisioner replica can
start one while another is stopping them), and only processes that are zygotes: a pid file
naming another process leaves it alone. Real processes, started and ended by the test."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from deploy.local.down import stop_amphorae

# A process whose command line names the zygote module, as a zygote's does.
_ZYGOTE_LIKE = [sys.executable, "-c", "import time; time.sleep(60)", "services.amphora.zygote"]
_OTHER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _pid_file(path: Path, proc: subprocess.Popen[bytes]) -> None:
    path.parent.mkdir(parents=True)
    path.write_text(str(proc.pid))


def test_down_stops_every_hosts_zygote_and_nothing_else(tmp_path: Path) -> None:
    zygotes = [subprocess.Popen(_ZYGOTE_LIKE) for _ in range(2)]
    other = subprocess.Popen(_OTHER)
    try:
        _pid_file(tmp_path / "amphorae" / ".zygote" / "zygote.pid", zygotes[0])
        _pid_file(tmp_path / "amphorae" / "hosts" / "h1" / ".zygote" / "zygote.pid", zygotes[1])
        _pid_file(tmp_path / "amphorae" / "hosts" / "h2" / ".zygote" / "zygote.pid", other)
        stop_amphorae(tmp_path, timeout=5)
        deadline = time.monotonic() + 5
        while any(z.poll() is None for z in zygotes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [z.poll() is not None for z in zygotes] == [True, True]
        assert other.poll() is None
    finally:
        for proc in [*zygotes, other]:
            proc.kill()
            proc.wait()
