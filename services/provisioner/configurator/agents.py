"""The provisioner's connections to amphora agents: its client certificate, one cached client
and the agent's info per amphora.

The client certificate is issued by the deployment CA when the provisioner starts; every
client shares one TLS context and names its amphora as the server name (the agent's
certificate carries the amphora id).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from libs.common.agent_contract import AgentInfo
from libs.common.errors import InfrastructureError
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file
from services.provisioner.adapters.agent_client import AmphoraAgentClient, client_ssl_context
from services.provisioner.drivers import AmphoraHandle

log = logging.getLogger(__name__)

# Below the 15 s an idle client connection is kept open (aiohttp's keep-alive).
KEEP_WARM_INTERVAL: Final = 10.0


def amphora_key(handle: AmphoraHandle) -> str:
    """What per-amphora caches are keyed by: a new agent address is a new amphora to them."""
    return f"{handle.amphora_id}@{handle.agent_url}"


def _own_client_context(ca_cert: Path, directory: Path, pair_pem: bytes) -> ssl.SSLContext:
    """The client context of this process's own certificate and key (``pair_pem``), loaded
    from a file of its own: the shared ``provisioner-client.*`` files may already hold
    another replica's pair (every start issues one), and one's certificate with the other's
    key does not load."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=".provisioner-client-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pair_pem)
        return client_ssl_context(ca_cert, Path(path), Path(path), check_hostname=True)
    finally:
        os.unlink(path)


class AgentConnections:
    """Cached agent clients and agent infos; ``forget`` drops an amphora's (and tells the
    other per-amphora caches through ``on_forget``).

    A spare is contacted once it boots (``warm``), asked again while it waits so that its
    connection stays open (``keep_warm``), and its info adopted by the process that claims it
    (``adopt``): the create's push starts on an open connection with the agent's info in
    hand. Another process's claim leaves the warmed info unused: an info is only trusted as
    fresh by the process that knows nothing was pushed since it was fetched.
    """

    def __init__(self, ca: DeploymentCA, directory: Path) -> None:
        self._ca = ca
        issued = ca.issue_client_cert("fulcrum-provisioner", validity_days=365)
        self._cert = directory / "provisioner-client.pem"
        self._key = directory / "provisioner-client.key"
        write_private_file(self._cert, issued.cert_pem, mode=0o644)
        write_private_file(self._key, issued.key_pem)
        self._ssl = _own_client_context(ca.cert_path, directory, issued.cert_pem + issued.key_pem)
        self._clients: dict[str, AmphoraAgentClient] = {}
        self._infos: dict[str, AgentInfo] = {}
        # Spares contacted ahead and not claimed here, with what they last answered.
        self._warmed: dict[str, tuple[AmphoraHandle, AgentInfo]] = {}
        self._adopted: set[str] = set()
        self._forget_hooks: list[Callable[[str], None]] = []

    def on_forget(self, hook: Callable[[str], None]) -> None:
        """Call ``hook(amphora_key)`` for every amphora forgotten."""
        self._forget_hooks.append(hook)

    def client(self, handle: AmphoraHandle) -> AmphoraAgentClient:
        """The (cached) client of one amphora's agent; it checks the amphora id in the cert."""
        key = amphora_key(handle)
        client = self._clients.get(key)
        if client is None:
            client = AmphoraAgentClient(
                handle.agent_url,
                self._ca.cert_path,
                self._cert,
                self._key,
                server_name=handle.amphora_id,
                ssl_context=self._ssl,
            )
            self._clients[key] = client
        return client

    async def info(self, handle: AmphoraHandle) -> AgentInfo:
        """The agent's info, fetched on first use and then cached."""
        key = amphora_key(handle)
        info = self._infos.get(key)
        if info is None:
            info = await self.client(handle).info()
            self._infos[key] = info
        return info

    async def warm(self, handle: AmphoraHandle) -> None:
        """Contact a spare's agent ahead of its claim: its connection opens (and stays open
        for the client's keep-alive) and its info is kept for ``adopt``. A failure is only
        logged: the first push contacts the agent again and reports what fails."""
        try:
            self._warmed[amphora_key(handle)] = (handle, await self.client(handle).info())
        except InfrastructureError as exc:
            log.warning("amphora %s: agent not contacted ahead: %s", handle.amphora_id, exc)

    async def keep_warm(self, interval: float = KEEP_WARM_INTERVAL) -> None:
        """Forever: every ``interval`` seconds, ask each spare warmed here and not claimed
        yet for its info again, keeping its connection open until its claim. A spare that
        does not answer is no longer kept warm (its claim contacts it afresh)."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.gather(*(self._rewarm(key) for key in list(self._warmed)))

    async def _rewarm(self, key: str) -> None:
        entry = self._warmed.get(key)
        if entry is None:
            return
        handle = entry[0]
        try:
            info = await self.client(handle).info()
        except Exception as exc:  # best effort (its client may be closed under it): never dies
            log.info("amphora %s: not kept warm: %r", handle.amphora_id, exc)
            self._warmed.pop(key, None)
            return
        if key in self._warmed:  # not claimed meanwhile
            self._warmed[key] = (handle, info)

    def adopt(self, handle: AmphoraHandle) -> None:
        """This process claimed the spare (nothing was pushed to it since its boot): the info
        ``warm`` fetched becomes its info, as fresh as a first contact."""
        key = amphora_key(handle)
        warmed = self._warmed.pop(key, None)
        if warmed is not None and key not in self._infos:
            self._infos[key] = warmed[1]
            self._adopted.add(key)

    def first_contact(self, handle: AmphoraHandle) -> bool:
        """Whether nothing this process knows of the amphora predates its cached info's
        fetch: never contacted, or just adopted (asked once: the answer is then False)."""
        key = amphora_key(handle)
        if key in self._adopted:
            self._adopted.discard(key)
            return True
        return key not in self._infos

    async def forget(self, amphora_id: str) -> None:
        """Close and drop everything cached of the amphora (it is gone)."""
        for key in [k for k in self._clients if k.startswith(f"{amphora_id}@")]:
            await self._clients.pop(key).close()
            self._infos.pop(key, None)
            self._warmed.pop(key, None)
            self._adopted.discard(key)
            for hook in self._forget_hooks:
                hook(key)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
