"""A real Ansible ``openstack.cloud`` playbook against ``fulcrum up``.

The playbook (``ansible/loadbalancer.yml``) builds a load balancer, listener, pool, two members
and a health monitor; traffic then flows through the VIP. A second identical run changes
nothing, a run with other values updates in place, and ``state: absent`` deletes the whole
tree (the module's cascade delete). The load balancer module looks the VIP's floating IPs up
(``GET /v2.0/floatingips?...``) on every run: the Neutron subset answers it.

Ansible runs from its own venv (``ansible/requirements.txt``, pinned; made by ``make
ansible-venv``, or here when missing): ansible 12.3.0 (ansible-core 2.19, openstack.cloud
2.5.0) with openstacksdk 4.14.0, which that collection needs (see the requirements file).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Backend, Stack, cloud_cli
from tests.e2e.test_openstack_cli import fetch

pytestmark = pytest.mark.timeout(420)

HERE = Path(__file__).parent / "ansible"
REQUIREMENTS = HERE / "requirements.txt"
PLAYBOOK = HERE / "loadbalancer.yml"
REPO = Path(__file__).resolve().parents[2]
ANSIBLE_VENV = Path(os.environ.get("FULCRUM_ANSIBLE_VENV", REPO / ".venv-ansible"))
LISTENER_PORT = 8089


def ansible_venv() -> Path:
    """The tool venv with ``ansible-playbook``, installed from ``requirements.txt`` when its
    stamp is older than that file (the same recipe as ``make ansible-venv``)."""
    stamp = ANSIBLE_VENV / ".installed"
    if stamp.exists() and stamp.stat().st_mtime >= REQUIREMENTS.stat().st_mtime:
        return ANSIBLE_VENV
    if not (ANSIBLE_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True, timeout=120)
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(ANSIBLE_VENV / "bin" / "python"),
         "-r", str(REQUIREMENTS)],
        check=True,
        timeout=600,
    )
    stamp.touch()
    return ANSIBLE_VENV


@pytest.fixture(scope="module")
def playbook_runner(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    venv = ansible_venv()
    home = tmp_path_factory.mktemp("ansible-home")
    env = {
        **os.environ,
        "OS_CLIENT_CONFIG_FILE": str(stack.clouds_yaml),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        # The module's code on the interpreter's stdin: no temporary file per task.
        "ANSIBLE_PIPELINING": "1",
        "ANSIBLE_PYTHON_INTERPRETER": str(venv / "bin" / "python"),
        "PYTHONWARNINGS": "ignore",
    }

    async def run(**variables: Any) -> list[str]:
        """Runs the playbook; returns the names of the tasks that changed something."""
        proc = await asyncio.create_subprocess_exec(
            str(venv / "bin" / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            json.dumps(variables),
            str(PLAYBOOK),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 300)
        try:
            report = json.loads(out.decode())
        except ValueError:
            raise AssertionError(f"ansible-playbook: {out.decode()}\n{err.decode()}") from None
        tasks = [task for play in report["plays"] for task in play["tasks"]]
        failed = [
            (task["task"]["name"], host.get("msg"), host.get("module_stderr"))
            for task in tasks
            for host in task["hosts"].values()
            if host.get("failed")
        ]
        assert proc.returncode == 0 and not failed, failed or err.decode()
        return [
            task["task"]["name"]
            for task in tasks
            if any(host.get("changed") for host in task["hosts"].values())
        ]

    return run


async def test_openstack_cloud_playbook_idempotent_update_and_cascade_delete(
    stack: Stack, backends: list[Backend], playbook_runner: Any
) -> None:
    async with cloud_cli(stack, "fulcrum").session() as cli:
        subnet = (
            await cli("subnet", "show", "public-subnet", "-f", "value", "-c", "id")
        ).out.strip()
        variables = {
            "cloud": "fulcrum",
            "lb_name": "ansible-lb",
            "listener_port": LISTENER_PORT,
            "member_ports": [b.port for b in backends],
            "subnet_id": subnet,
            "lb_algorithm": "ROUND_ROBIN",
            "member_weight": 1,
            "hm_delay": 5,
            "timeout_client_data": 50000,
            "lb_state": "present",
        }
        everything = ["Load balancer", "Listener", "Pool", "Members", "Health monitor"]
        assert await playbook_runner(**variables) == everything

        lb = json.loads((await cli("loadbalancer", "show", "ansible-lb", "-f", "json")).out)
        assert lb["provisioning_status"] == "ACTIVE"
        seen = [await fetch(f"http://{lb['vip_address']}:{LISTENER_PORT}/") for _ in range(4)]
        assert sorted(set(seen)) == ["backend-0", "backend-1"]

        assert await playbook_runner(**variables) == []

        updated = {
            **variables,
            "lb_algorithm": "LEAST_CONNECTIONS",
            "member_weight": 5,
            "hm_delay": 7,
            "timeout_client_data": 40000,
        }
        assert await playbook_runner(**updated) == everything[1:]
        pool = json.loads(
            (await cli("loadbalancer", "pool", "show", "ansible-lb-pool", "-f", "json")).out
        )
        assert pool["lb_algorithm"] == "LEAST_CONNECTIONS"
        members = json.loads(
            (await cli("loadbalancer", "member", "list", "ansible-lb-pool", "-f", "json")).out
        )
        assert [m["weight"] for m in members] == [5, 5]
        hm = json.loads(
            (await cli("loadbalancer", "healthmonitor", "show", "ansible-lb-hm", "-f", "json")).out
        )
        assert hm["delay"] == 7
        listener = json.loads(
            (await cli("loadbalancer", "listener", "show", "ansible-lb-listener", "-f", "json")).out
        )
        assert listener["timeout_client_data"] == 40000
        assert await fetch(f"http://{lb['vip_address']}:{LISTENER_PORT}/") in (
            "backend-0",
            "backend-1",
        )

        assert await playbook_runner(**{**updated, "lb_state": "absent"}) == ["Load balancer"]
        floating_lookups = re.findall(
            r'"GET /v2\.0/floatingips\?(\S+) HTTP/1\.1" (\d+)',
            (stack.state / "api.log").read_text(),
        )
        assert floating_lookups and {status for _, status in floating_lookups} == {"200"}
        assert any(
            f"fixed_ip_address={lb['vip_address']}" in q and f"port_id={lb['vip_port_id']}" in q
            for q, _ in floating_lookups
        ), floating_lookups
        assert json.loads((await cli("loadbalancer", "list", "-f", "json")).out) == []
        for kind in ("listener", "pool", "healthmonitor"):
            assert json.loads((await cli("loadbalancer", kind, "list", "-f", "json")).out) == []
        with pytest.raises(aiohttp.ClientError):
            await fetch(f"http://{lb['vip_address']}:{LISTENER_PORT}/")
