"""One throwaway agent's life, lived in the zygote before it forks any: what every agent builds
lazily on its way to its first installed configuration is then built once and shared.

The rehearsal serves a real agent (``app.serve``) on loopback with a throwaway self-signed
identity, heartbeats to a socket of its own, and asks it what the provisioner asks a new
amphora (its info, then a listener-less configuration pushed with ``check_later``, installed
as a spare's first is), over mutual TLS; then stops it. Its event loop is closed and its
threads have ended when ``rehearse`` returns, so forking after it is as safe as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from libs.common import event_loop
from libs.common.agent_contract import API_PREFIX, PUSHED_CONTENT_TYPE, AgentInfo
from libs.common.logsetup import configure_logging, set_log_context
from services.amphora.app import serve
from services.amphora.settings import SERVICE_NAME, AmphoraSettings

_NAME: Final = "zygote-rehearsal"
_PATIENCE: Final = 30.0
_PREFIX: Final = "FULCRUM_AMPHORA_"
# The rehearsal's agent serves on loopback in the zygote's own namespace, whatever the zygote's
# environment says; every other agent setting there applies to it, as to the zygote's agents.
_UNSET: Final = ("NETNS", "VIP_INTERFACE", "PORT_FILE")


def _identity(directory: Path) -> tuple[Path, Path]:
    """A self-signed EC certificate (its own CA, for server and client alike) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _NAME)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(_NAME)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "identity.pem", directory / "identity.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.contextmanager
def _agent_environment(given: dict[str, str]) -> Iterator[None]:
    """Inside: the zygote's environment with ``FULCRUM_AMPHORA_<name>`` set for ``given`` and
    unset for ``_UNSET``; then the environment as it was."""
    names = [_PREFIX + name for name in (*given, *_UNSET)]
    saved = {name: os.environ.get(name) for name in names}
    for name in _UNSET:
        os.environ.pop(_PREFIX + name, None)
    os.environ.update({_PREFIX + name: value for name, value in given.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _idle_config(info: AgentInfo) -> str:
    """A configuration without listeners, as the provisioner renders one for a bare LB."""
    return (
        f"# Load balancer {_NAME}: rehearsed by the zygote.\n"
        "global\n"
        f"    stats socket {info.stats_socket} mode 600 level admin\n"
        "    hard-stop-after 30s\n"
        "    maxconn 100\n"
        # As the provisioner's template: its check then skips the system CA store's load.
        "    httpclient.ssl.verify none\n"
        "\n"
        "defaults\n"
        "    timeout connect 5s\n"
        "    timeout client 50s\n"
        "    timeout server 50s\n"
    )


async def _live(directory: Path, health: socket.socket) -> None:
    cert, key = _identity(directory)
    health_port = health.getsockname()[1]
    given = {
        "AMPHORA_ID": _NAME,
        "LB_ID": "",
        "STATE_DIR": str(directory / "amphora"),
        "BIND_HOST": "127.0.0.1",
        "BIND_PORT": "0",
        "CERT_WAIT": "0",
        "CA_CERT": str(cert),
        "SERVER_CERT": str(cert),
        "SERVER_KEY": str(key),
        "HEARTBEAT_KEY": _NAME,
        "HEALTH_ENDPOINTS": json.dumps([f"127.0.0.1:{health_port}"]),
    }
    with _agent_environment(given):
        settings = AmphoraSettings()  # from the environment, as an agent's
    # Logging as an agent's (the zygote's own lines go there too): its records are made and
    # formatted here first, not in every agent (a record's first check of its argument
    # against an ABC walks that ABC's subclasses). In this task's context only.
    configure_logging(settings.log_level, SERVICE_NAME)
    set_log_context(amphora_id=settings.amphora_id)
    stopping = asyncio.Event()
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    agent = asyncio.create_task(serve(settings, stopping, listening.set_result))
    try:
        async with asyncio.timeout(_PATIENCE):
            either: set[asyncio.Future[Any]] = {agent, listening}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if listening.done():
                await _ask(listening.result(), cert, key)
    finally:
        stopping.set()
        await agent  # raises what made it end before it listened


async def _ask(port: int, cert: Path, key: Path) -> None:
    """What the provisioner asks a new amphora, over mutual TLS: its info, then a
    configuration without listeners (``check_later``)."""
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    client.check_hostname = False
    client.load_cert_chain(str(cert), str(key))
    base = f"https://127.0.0.1:{port}{API_PREFIX}"
    connector = aiohttp.TCPConnector(ssl=client)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{base}/info") as answer:
            answer.raise_for_status()
            info = AgentInfo.model_validate_json(await answer.read())
        config = _idle_config(info)
        headers = {"Content-Type": PUSHED_CONTENT_TYPE}
        url = f"{base}/haproxy/config?check_later=true"
        async with session.put(url, data=config, headers=headers) as answer:
            answer.raise_for_status()


def rehearse() -> None:
    """Live one throwaway agent's life in this process (blocking, ~0.2 s). When it returns or
    raises (what the agent or its client raised; TimeoutError after 30 s), no event loop runs,
    every thread it started has ended and its files are gone."""
    try:
        with (
            tempfile.TemporaryDirectory(prefix="fulcrum-rehearsal-") as name,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as health,
        ):
            health.bind(("127.0.0.1", 0))
            event_loop.run(_live(Path(name), health), SERVICE_NAME)
    finally:
        for thread in threading.enumerate():
            if thread is not threading.main_thread():
                thread.join()  # the loop's executor is shut down; a child watcher's ends
