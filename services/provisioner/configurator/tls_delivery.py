"""TLS files on amphorae: those a configuration needs are uploaded before it is applied, those
the previous configuration used and this one does not are removed after.

What each amphora stores is remembered (name -> sha256) so an unchanged file is not sent
again; what its installed configuration lists is remembered too, or read from the installed
configuration's manifest after a provisioner restart.
"""

from __future__ import annotations

from collections.abc import Iterable

from libs.common.domain.model import LoadBalancerState
from services.provisioner.certificates import CertificateSource, TlsFile, manifest_of, plan_tls
from services.provisioner.configurator.agents import AgentConnections, amphora_key
from services.provisioner.configurator.haproxy_config import TlsContext
from services.provisioner.drivers import AmphoraHandle


class TlsDelivery:
    """Uploads and removes the TLS files of LB configurations (``certificates`` resolves
    key manager references; None: no keys configured)."""

    def __init__(self, agents: AgentConnections, certificates: CertificateSource | None) -> None:
        self._agents = agents
        self._certificates = certificates
        self._stored: dict[str, dict[str, str]] = {}
        self._installed: dict[str, set[str]] = {}
        agents.on_forget(self._forget)

    async def deliver(self, state: LoadBalancerState, handle: AmphoraHandle) -> TlsContext:
        """Put the TLS files the LB's config uses on the amphora (uploaded when missing or
        different); raises CertificateUnavailable and the agent client's errors."""
        info = await self._agents.info(handle)
        plan = await plan_tls(state, self._certificates, info.certs_dir)
        await self._upload(handle, plan.files.values())
        return TlsContext(plan.listener_tls, plan.pool_tls, frozenset(plan.files))

    async def _upload(self, handle: AmphoraHandle, files: Iterable[TlsFile]) -> None:
        stored = self._stored.setdefault(amphora_key(handle), {})
        client = self._agents.client(handle)
        for item in files:
            if stored.get(item.name) == item.sha256:
                continue
            present = await client.get_certificate(item.name)
            if present is None or present.sha256 != item.sha256:
                await client.upload_certificate(item.name, item.content)
            stored[item.name] = item.sha256

    async def in_use(self, handle: AmphoraHandle) -> set[str]:
        """The TLS files the amphora's installed config lists. On first contact the agent's
        info (fetched now or adopted with a claimed spare, then cached) tells whether it has a
        config at all: a fresh or spare amphora is not asked for one."""
        installed = self._installed.get(amphora_key(handle))
        if installed is not None:
            return installed
        if self._agents.first_contact(handle):
            first_contact = await self._agents.info(handle)
            if first_contact.config_sha256 is None:
                return set()
        return manifest_of(await self._agents.client(handle).get_config())

    async def installed(
        self, handle: AmphoraHandle, used: Iterable[str], previous: set[str]
    ) -> None:
        """A config using ``used`` is installed: remove the files of ``previous`` it does not
        use."""
        key = amphora_key(handle)
        self._installed[key] = set(used)
        stored = self._stored.setdefault(key, {})
        client = self._agents.client(handle)
        for name in sorted(previous - self._installed[key]):
            await client.delete_certificate(name)
            stored.pop(name, None)

    def _forget(self, key: str) -> None:
        self._stored.pop(key, None)
        self._installed.pop(key, None)
