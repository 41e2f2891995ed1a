"""``fulcrum up``: the whole stack on one machine, the embedded default.

Starts Postgres and NATS JetStream as child processes (state under ``--state-dir``), then one
process per service that exists (api, provisioner, health, housekeeping) with the process
driver, writes ``endpoint.txt``, ``clouds.yaml`` and ``ready``, and stops everything it started
(by pid) on SIGTERM or SIGINT.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from libs.common.embedded import EmbeddedNats, EmbeddedPostgres
from libs.common.secretstore import new_key

SERVICE_ORDER = ("api", "provisioner", "health", "housekeeping")
# Control-plane ports: the API on --port, the others' /healthz and /metrics beside it.
SIDE_PORTS = {"provisioner": 9877, "health": 9878, "housekeeping": 9879}
HEALTH_UDP_PORT = 5555


def _service_exists(name: str) -> bool:
    return importlib.util.find_spec(f"services.{name}.__main__") is not None


def _secret(state: Path, name: str, make: Callable[[], str] | None = None) -> str:
    """A per-deployment secret kept in the state dir (created at first start)."""
    path = state / name
    if not path.exists():
        path.write_text(make() if make is not None else secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def service_environment(
    state: Path, pg_dsn: str, nats_url: str, api_port: int
) -> dict[str, dict[str, str]]:
    """The FULCRUM_* environment of each service for this deployment."""
    heartbeat_key = _secret(state, "heartbeat.key")
    secret_keys = _secret(state, "secret.keys", new_key)
    api_url = f"http://127.0.0.1:{api_port}"
    common = {
        "POSTGRES__DSN": pg_dsn,
        "NATS__URL": nats_url,
    }
    env: dict[str, dict[str, str]] = {
        "api": {
            **common,
            "PORT": str(api_port),
            "PUBLIC_URL": api_url,
            "AUTH_STRATEGY": "keystone",
            "IDENTITY_FILE": str(state / "identity.yaml"),
            "ADMIN_PASSWORD": _secret(state, "admin.password"),
            "TOKEN_KEY": _secret(state, "token.key"),
            "ADMIN_TOKEN": _secret(state, "admin.token"),
            "SECRET_KEYS": secret_keys,
        },
        "provisioner": {
            **common,
            "PORT": str(SIDE_PORTS["provisioner"]),
            "STATE_DIR": str(state / "amphorae"),
            "CA_DIR": str(state / "ca"),
            "HEARTBEAT_KEY": heartbeat_key,
            "HEALTH_ENDPOINTS": f'["127.0.0.1:{HEALTH_UDP_PORT}"]',
            "SECRET_KEYS": secret_keys,
        },
        "health": {
            **common,
            "PORT": str(SIDE_PORTS["health"]),
            "HEARTBEAT_KEY": heartbeat_key,
            "UDP_PORT": str(HEALTH_UDP_PORT),
        },
        "housekeeping": {
            **common,
            "PORT": str(SIDE_PORTS["housekeeping"]),
            # Two booted spares: a new LB takes one instead of waiting for a boot.
            "SPARES__POOL_SIZE": "2",
            "CERTIFICATES__CA_CERT": str(state / "ca" / "ca.pem"),
        },
    }
    return {
        svc: {f"FULCRUM_{svc.upper()}_{k}": v for k, v in values.items()}
        for svc, values in env.items()
    }


def write_clouds_yaml(state: Path, api_url: str) -> Path:
    """A clouds.yaml the real ``openstack`` CLI and openstacksdk can use at once: cloud
    ``fulcrum`` (Keystone password of the bootstrap admin) and ``fulcrum-admin-token``."""
    path = state / "clouds.yaml"
    path.write_text(
        "clouds:\n"
        "  fulcrum:\n"
        "    auth_type: password\n"
        "    auth:\n"
        f"      auth_url: {api_url}/v3\n"
        "      username: admin\n"
        f"      password: {_secret(state, 'admin.password')}\n"
        "      project_name: admin\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
        "    region_name: RegionOne\n"
        "    interface: public\n"
        "    identity_api_version: 3\n"
        "  fulcrum-admin-token:\n"
        "    auth_type: admin_token\n"
        "    auth:\n"
        f"      token: {_secret(state, 'admin.token')}\n"
        f"      endpoint: {api_url}\n"
        "    region_name: RegionOne\n"
    )
    path.chmod(0o600)
    return path


def stop_amphorae(state: Path) -> None:
    """SIGTERM every amphora agent the process driver started under ``state`` (by pid)."""
    for pid_file in [
        *(state / "amphorae").glob("*/agent.pid"),
        *(state / "amphorae").glob(".zygote/zygote.pid"),
    ]:
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            continue


def _wait_http(url: str, timeout: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} during start")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback)
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def run_up(state_dir: str, api_port: int) -> int:
    """Run the stack in the foreground until SIGTERM/SIGINT; returns the exit code."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    (state / "ready").unlink(missing_ok=True)
    pg = EmbeddedPostgres(state / "postgres")
    nats_server = EmbeddedNats(state / "nats")
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        pg_dsn = pg.start()
        nats_url = nats_server.start()
        (state / "nats.url").write_text(nats_url)
        envs = service_environment(state, pg_dsn, nats_url, api_port)
        for name in SERVICE_ORDER:
            if not _service_exists(name):
                continue
            log = open(state / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}"],
                    env={**os.environ, **envs[name]},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            print(f"fulcrum up: started {name} (pid {procs[-1].pid})", flush=True)
        api_url = f"http://127.0.0.1:{api_port}"
        _wait_http(f"{api_url}/healthz", 60, procs)
        clouds = write_clouds_yaml(state, api_url)
        endpoint = (
            f"Fulcrum is up.\n"
            f"  API (Octavia v2, Neutron and Keystone subsets): {api_url}\n"
            f"  Postgres: {pg_dsn}\n  NATS: {nats_url}\n"
            f"  clouds.yaml: {clouds}\n"
            f"Use it:\n"
            f"  export OS_CLIENT_CONFIG_FILE={clouds} OS_CLOUD=fulcrum\n"
            f"  openstack loadbalancer create --name my-lb --vip-subnet public-subnet\n"
            f"Logs: {state}/*.log   Stop: make down\n"
        )
        (state / "endpoint.txt").write_text(endpoint)
        print(endpoint, flush=True)
        (state / "ready").write_text(str(os.getpid()))
        while not stopping:
            for proc in procs:
                if proc.poll() is not None:
                    print(f"fulcrum up: {proc.args!r} exited with {proc.returncode}", flush=True)
                    stopping = True
            time.sleep(0.2)
        return 0
    except Exception as exc:  # noqa: BLE001 (report any start failure plainly)
        print(f"fulcrum up: failed: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        (state / "ready").unlink(missing_ok=True)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        stop_amphorae(state)
        nats_server.stop()
        pg.stop()
