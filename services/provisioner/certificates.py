"""Certificate delivery: the TLS files a load balancer's HAProxy needs, from its listeners'
and pools' key manager references to files on the amphora.

``plan_tls`` resolves every reference of the rendered TERMINATED_HTTPS listeners and
re-encrypting pools into PEM files named by a digest of their content (a replaced certificate
is a new file, so a reload switches atomically and the old file is removed afterwards):

- a listener's crt-list names its default certificate first, then its SNI certificates;
  HAProxy picks one by SNI. Each certificate file holds certificate, chain, then key.
- CA bundles as they are; a CRL file holds the CA certificates too (the agent stores only
  bundles with a certificate, and HAProxy ignores certificates in a crl-file).
- the crt-list carries the default certificate on a comment line for the same reason.

The agent stores each file 0600 under its certs dir (only HAProxy's user reads it) and only
over its mutual-TLS API. The files a configuration uses are listed in a trailing comment of
that configuration (``MANIFEST_PREFIX``): the next push removes those no longer listed, even
after a provisioner restart.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Final, Protocol

from cryptography.hazmat.primitives import serialization

from libs.common.domain.model import (
    Listener,
    ListenerProtocol,
    LoadBalancerState,
    Pool,
    ProvisioningStatus,
)
from libs.common.errors import FulcrumError
from libs.common.secretstore import MaterialError
from libs.common.tls import CaBundle, KeyPair, Revocations
from services.provisioner.rendering import ListenerTlsFiles, PoolTlsFiles

__all__ = [
    "MANIFEST_PREFIX",
    "CertificateSource",
    "CertificateUnavailable",
    "TlsFile",
    "TlsPlan",
    "manifest_line",
    "manifest_of",
    "plan_tls",
]

MANIFEST_PREFIX: Final = "# fulcrum-tls-files:"
_SKIPPED: Final = frozenset({ProvisioningStatus.PENDING_DELETE, ProvisioningStatus.DELETED})


class CertificateUnavailable(FulcrumError):
    """A reference cannot be resolved into usable material (deleted, expired, no keys)."""


class CertificateSource(Protocol):
    """Resolves references (libs.common.secretstore.PostgresSecretStore)."""

    async def keypair(self, ref: str, project_id: str | None, what: str) -> KeyPair: ...
    async def ca_bundle(self, ref: str, project_id: str | None, what: str) -> CaBundle: ...
    async def crl(self, ref: str, project_id: str | None, what: str) -> Revocations: ...


@dataclass(frozen=True)
class TlsFile:
    """One file for the agent: ``name`` (its `<name>.pem`) and content."""

    name: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class TlsPlan:
    """Files to deliver and where the render context finds them."""

    files: dict[str, TlsFile] = field(default_factory=dict)
    listener_tls: dict[str, ListenerTlsFiles] = field(default_factory=dict)
    pool_tls: dict[str, PoolTlsFiles] = field(default_factory=dict)


def _live(resource: Listener | Pool) -> bool:
    return resource.provisioning_status not in _SKIPPED and resource.admin_state_up


class _Planner:
    def __init__(self, source: CertificateSource, project_id: str, certs_dir: str) -> None:
        self.source = source
        self.project_id = project_id
        self.certs_dir = PurePosixPath(certs_dir)
        self.plan = TlsPlan()

    def add(self, kind: str, content: bytes) -> str:
        """Store ``content`` as a content-named file; returns its path on the amphora."""
        name = f"{kind}-{hashlib.sha256(content).hexdigest()[:32]}"
        self.plan.files.setdefault(name, TlsFile(name, content))
        return str(self.certs_dir / f"{name}.pem")

    async def keypair(self, ref: str, what: str) -> KeyPair:
        try:
            return await self.source.keypair(ref, self.project_id, what)
        except MaterialError as exc:
            raise CertificateUnavailable(str(exc)) from None

    async def ca(self, ref: str, what: str) -> CaBundle:
        try:
            return await self.source.ca_bundle(ref, self.project_id, what)
        except MaterialError as exc:
            raise CertificateUnavailable(str(exc)) from None

    async def crl_file(self, ref: str, ca: CaBundle | None, what: str) -> str:
        try:
            crl = await self.source.crl(ref, self.project_id, what)
        except MaterialError as exc:
            raise CertificateUnavailable(str(exc)) from None
        if ca is None:
            raise CertificateUnavailable(f"{what}: a revocation list needs a CA.")
        return self.add("crl", ca.pem() + crl.pem())

    async def listener(self, listener: Listener) -> None:
        refs = [r for r in (listener.default_tls_container_ref, *listener.sni_container_refs) if r]
        if not refs:
            raise CertificateUnavailable(f"listener {listener.id} has no certificate reference")
        pairs = [await self.keypair(ref, f"listener {listener.id} {ref}") for ref in refs]
        paths = list(dict.fromkeys(self.add("crt", pair.bundle_pem()) for pair in pairs))
        default_der = pairs[0].certificate.public_bytes(serialization.Encoding.DER)
        lines = [
            f"# crt-list of listener {listener.id}: the default certificate first, then SNI",
            "#-----BEGIN CERTIFICATE-----"
            + base64.b64encode(default_der).decode()
            + "-----END CERTIFICATE-----",
            *paths,
        ]
        crt_list = self.add("crtlist", ("\n".join(lines) + "\n").encode())
        client_ca = client_crl = None
        ca = None
        if listener.client_ca_tls_container_ref:
            ca = await self.ca(listener.client_ca_tls_container_ref, f"listener {listener.id} CA")
            client_ca = self.add("ca", ca.pem())
        if listener.client_crl_container_ref:
            client_crl = await self.crl_file(
                listener.client_crl_container_ref, ca, f"listener {listener.id} CRL"
            )
        self.plan.listener_tls[listener.id] = ListenerTlsFiles(
            crt_list=crt_list, client_ca=client_ca, client_crl=client_crl
        )

    async def pool(self, pool: Pool) -> None:
        client_cert = ca_file = crl_file = None
        ca = None
        if pool.tls_container_ref:
            pair = await self.keypair(pool.tls_container_ref, f"pool {pool.id} client certificate")
            client_cert = self.add("crt", pair.bundle_pem())
        if pool.ca_tls_container_ref:
            ca = await self.ca(pool.ca_tls_container_ref, f"pool {pool.id} CA")
            ca_file = self.add("ca", ca.pem())
        if pool.crl_container_ref:
            crl_file = await self.crl_file(pool.crl_container_ref, ca, f"pool {pool.id} CRL")
        if client_cert or ca_file:
            self.plan.pool_tls[pool.id] = PoolTlsFiles(
                client_cert=client_cert, ca=ca_file, crl=crl_file
            )


async def plan_tls(
    state: LoadBalancerState, source: CertificateSource | None, certs_dir: str
) -> TlsPlan:
    """The files and render-context entries ``state`` needs; raises CertificateUnavailable
    (the LB goes ERROR with its message) when a reference cannot serve."""
    lb = state.loadbalancer
    if lb is None:
        return TlsPlan()
    listeners = [
        li
        for li in state.listeners.values()
        if li.protocol is ListenerProtocol.TERMINATED_HTTPS and _live(li)
    ]
    pools = [
        p
        for p in state.pools.values()
        if p.tls_enabled
        and p.provisioning_status not in _SKIPPED
        and (p.tls_container_ref or p.ca_tls_container_ref)
    ]
    if not (listeners or pools):
        return TlsPlan()
    if source is None:
        raise CertificateUnavailable(
            "TLS references need the key manager's keys (FULCRUM_SECRET_KEYS)"
        )
    planner = _Planner(source, lb.project_id, certs_dir)
    for listener in sorted(listeners, key=lambda li: li.id):
        await planner.listener(listener)
    for pool in sorted(pools, key=lambda p: p.id):
        await planner.pool(pool)
    return planner.plan


def manifest_line(names: Iterable[str]) -> str:
    """The trailing comment listing a configuration's TLS files (empty: none)."""
    listed = sorted(names)
    return f"{MANIFEST_PREFIX} {' '.join(listed)}\n" if listed else ""


def manifest_of(config: str | None) -> set[str]:
    """The TLS file names a pushed configuration lists."""
    if not config:
        return set()
    for line in reversed(config.splitlines()):
        if line.startswith(MANIFEST_PREFIX):
            return set(line[len(MANIFEST_PREFIX) :].split())
    return set()
