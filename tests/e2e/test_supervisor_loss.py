"""Even the supervisor's death spares the data plane: kill -9 of supervisord under load.

``fulcrum up`` then exits 1 and says so, but leaves the amphorae serving (the parts
supervisord ran keep running too); ``fulcrum down`` stops those parts by the pids the restart
listener recorded, and the amphorae, leaving nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.chaos import Tenant, VipProber, pids
from tests.e2e.conftest import VENV_BIN, Backend, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)


async def test_supervisord_killed_leaves_vips_serving(
    tmp_path: Path, backends: list[Backend]
) -> None:
    state = tmp_path / "stack"
    stack = start_stack(state, "--port", "0")
    try:
        async with aiohttp.ClientSession() as session:
            tenant = Tenant(session, stack.api_url, stack.secret("admin.token"))
            lb = await tenant.wait_active(await tenant.create_lb("survivor", backends[0].port))
        parts = {k: v for k, v in pids(state).items() if k != "restart-counter"}
        prober = VipProber(interval=0.02, vips={lb["id"]: f"http://{lb['vip_address']}/"})
        prober.start()
        await asyncio.sleep(0.5)
        os.kill(int((state / "supervisord.pid").read_text()), signal.SIGKILL)
        stack.proc.wait(timeout=30)
        assert stack.proc.returncode == 1
        assert "supervisord died; the amphorae keep serving" in (state / "up.log").read_text()
        await asyncio.sleep(2.0)
        await prober.stop()
        assert prober.sent > 50 and not prober.failures, prober.failures[:3]

        down = subprocess.run(
            [str(VENV_BIN / "fulcrum"), "down", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, down.stderr
        assert "left by a dead supervisord" in down.stdout, down.stdout
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{pid}") for pid in parts.values()):
            assert time.monotonic() < deadline, "parts still running after fulcrum down"
            await asyncio.sleep(0.1)
    finally:
        stop_stack(stack.proc, state)
