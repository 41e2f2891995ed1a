"""``make test`` beside ``make up``: two stacks on one machine never share a port or a VIP.

Stack A is started exactly as a developer does (``make up STATE=...``, default port choice,
HTTPS with the deployment CA's certificate); stack B as the end-to-end fixtures start theirs.
Both serve LBs at once; ``fulcrum status`` answers for each (0 ready, 1 a part not ready, 2 no
stack); ``make down`` leaves nothing.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from deploy.local.state import StackPaths
from deploy.local.supervision import SupervisorClient
from tests.e2e.chaos import Tenant
from tests.e2e.conftest import VENV_BIN, Backend, cloud_cli, start_stack, stop_stack

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]


def status(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "fulcrum"), "status", "--state-dir", str(state), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def make(target: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", target, f"STATE={state}"], cwd=REPO, capture_output=True, text=True, timeout=300
    )


async def serve_one(
    stack_url: str, token: str, name: str, port: int, trust: ssl.SSLContext | bool = True
) -> str:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session:
        tenant = Tenant(session, stack_url, token)
        lb = await tenant.wait_active(await tenant.create_lb(name, port))
        vip = f"http://{lb['vip_address']}/"
        async with session.get(vip, headers={"Connection": "close"}) as resp:
            assert resp.status == 200
        return str(lb["vip_address"])


async def test_two_stacks_side_by_side(tmp_path: Path, backends: list[Backend]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    up = make("up", a)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        second = start_stack(b)
        try:
            ports_a = json.loads((a / "ports.json").read_text())
            ports_b = json.loads((b / "ports.json").read_text())
            shared = {k for k in ports_a if k != "vip_octet"} & {
                k for k, v in ports_b.items() if v in set(ports_a.values())
            }
            assert not shared, (ports_a, ports_b)
            assert ports_a["vip_octet"] != ports_b["vip_octet"]
            for state in (a, b):
                answer = status(state)
                assert answer.returncode == 0, answer.stdout + answer.stderr
                assert json.loads(answer.stdout)["ready"] is True

            url_a = f"https://127.0.0.1:{ports_a['api']}"
            trust_a = ssl.create_default_context(cafile=str(a / "ca" / "ca.pem"))
            token_a = (a / "admin.token").read_text().strip()
            vips = await asyncio.gather(
                serve_one(url_a, token_a, "lb-a", backends[0].port, trust_a),
                serve_one(second.api_url, second.secret("admin.token"), "lb-b", backends[1].port),
            )
            assert vips[0].startswith(f"127.{ports_a['vip_octet']}.")
            assert vips[1].startswith(f"127.{ports_b['vip_octet']}.")
            listed = await cloud_cli(second, "fulcrum")("loadbalancer", "list", "-f", "json")
            assert [lb["name"] for lb in listed.json()] == ["lb-b"]  # type: ignore[union-attr]

            # A part stopped by the operator: not ready (1); back again: ready (0).
            supervisor = SupervisorClient(StackPaths(b.resolve()).supervisor_socket)
            supervisor.stop("housekeeping")
            answer = status(b)
            assert answer.returncode == 1, answer.stdout
            parts = {p["name"]: p for p in json.loads(answer.stdout)["parts"]}
            assert (
                parts["housekeeping"]["state"] == "STOPPED" and not parts["housekeeping"]["ready"]
            )
            supervisor.start("housekeeping")
            for _ in range(100):
                if status(b).returncode == 0:
                    break
                await asyncio.sleep(0.2)
            assert status(b).returncode == 0
        finally:
            stop_stack(second.proc, b)
    finally:
        down = make("down", a)
        assert down.returncode == 0, down.stdout + down.stderr
    leftovers = subprocess.run(["pgrep", "-f", str(a)], capture_output=True, text=True).stdout
    assert not leftovers.split(), leftovers
    gone = status(a)
    assert gone.returncode == 2 and len(gone.stderr.strip().splitlines()) == 1, gone.stderr
    assert "no stack running" in gone.stderr
