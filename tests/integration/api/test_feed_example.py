"""docs/examples/subscribe_feed.py, the subscriber example of docs/events.md, run as a user
would run it against a real API with a Keystone token."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from services.api.auth.identity import save
from services.api.auth.tokens import new_token_key
from tests.integration.api.conftest import SUBNET, Api, MakeApi
from tests.integration.api.test_keystone_reads import DEMO, _identity, _token

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "subscribe_feed.py"


async def _run(api: Api, *args: str, timeout: float = 20.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--url",
        api.base,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_example_prints_a_projects_events_and_follows_live(
    make_api: MakeApi, tmp_path: Path
) -> None:
    path = tmp_path / "identity.yaml"
    save(path, _identity())
    api = await make_api(
        auth_strategy="keystone",
        token_keys=new_token_key(),
        identity_file=path,
        feed={"keepalive_seconds": 0.5, "poll_interval": 0.1},
    )
    token = await _token(api, "alice", "alice-pw", DEMO.name)
    headers = {"X-Auth-Token": token}
    body = {"loadbalancer": {"vip_subnet_id": SUBNET}}
    first = (await api.post("/v2/lbaas/loadbalancers", body, headers=headers, expect=201)).body
    example = asyncio.create_task(_run(api, "--token", token, "--after", "0", "--idle-exit", "2"))
    await asyncio.sleep(1.0)
    second = (await api.post("/v2/lbaas/loadbalancers", body, headers=headers, expect=201)).body
    code, out, err = await example
    assert code == 0, err
    envelopes = [json.loads(line) for line in out.splitlines()]
    created = [e for e in envelopes if e["event_type"] == "LoadBalancerCreated"]
    assert [e["data"]["loadbalancer"]["id"] for e in created] == [
        first["loadbalancer"]["id"],
        second["loadbalancer"]["id"],
    ]
    assert {e["metadata"]["project_id"] for e in envelopes} <= {DEMO.id}


async def test_the_example_stops_on_a_refused_token(make_api: MakeApi, tmp_path: Path) -> None:
    path = tmp_path / "identity.yaml"
    save(path, _identity())
    api = await make_api(auth_strategy="keystone", token_keys=new_token_key(), identity_file=path)
    code, out, err = await _run(api, "--token", "forged")
    assert (code, out) == (1, "")
    assert "feed refused: 401" in err
