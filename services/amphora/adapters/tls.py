"""The agent's mutual-TLS server context and the rotation of its own server certificate.

Only clients holding a certificate signed by the deployment CA (for client authentication)
complete the handshake; everyone else is refused by OpenSSL before any HTTP is read.

The part of that context every agent of one CA shares (the protocol floor, the client check,
the CA loaded: two thirds of its ~3 ms) can be built before an agent needs it
(``prepare_verifying_context``, in the zygote before it forks); each process takes it once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from libs.common.certificate_checks import is_issued_by
from libs.common.errors import ValidationFailed
from libs.common.private_files import write_private_file

_DELIVERY_POLL: Final = 0.01

# A file's version: inode, modification time and size (a rewrite or replacement changes it).
_FileVersion = tuple[int, int, int]
# Contexts built by ``prepare_verifying_context`` and not taken yet, by CA file path.
_PREPARED: dict[str, tuple[_FileVersion, ssl.SSLContext]] = {}


def _version(path: Path) -> _FileVersion | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _verifying_context(ca_cert: Path) -> ssl.SSLContext:
    """TLS >= 1.2 server context that requires a client certificate signed by `ca_cert`, with
    no certificate of its own yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca_cert))
    return context


def prepare_verifying_context(ca_cert: Path) -> None:
    """Build, unless built for this version of the file already, the verifying part of the
    server context of `ca_cert` for the next ``server_ssl_context`` of this process, or of
    each process forked from it. A CA file that cannot be loaded is left for the agent to
    report."""
    version = _version(ca_cert)
    prepared = _PREPARED.get(str(ca_cert))
    if version is None or (prepared is not None and prepared[0] == version):
        return
    try:
        _PREPARED[str(ca_cert)] = (version, _verifying_context(ca_cert))
    except OSError:  # ssl.SSLError included
        _PREPARED.pop(str(ca_cert), None)


def server_ssl_context(ca_cert: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """TLS >= 1.2 server context that requires a client certificate signed by `ca_cert` and
    presents `cert`; the prepared verifying part when its CA file has not changed since (taken:
    a context holds one certificate, so no two servers of a process share one)."""
    prepared = _PREPARED.pop(str(ca_cert), None)
    if prepared is not None and prepared[0] == _version(ca_cert):
        context = prepared[1]
    else:
        context = _verifying_context(ca_cert)
    context.load_cert_chain(str(cert), str(key))
    return context


class AgentTLS:
    """Owns the listening socket's SSLContext; `rotate` swaps the certificate in place.

    OpenSSL copies the context's certificate into each connection at handshake time, so a
    rotation applies to every new connection while open ones keep the old certificate.
    """

    def __init__(self, ca_cert: Path, cert_path: Path, key_path: Path) -> None:
        self.ca_cert = ca_cert
        self.cert_path = cert_path
        self.key_path = key_path
        self.context = server_ssl_context(ca_cert, cert_path, key_path)

    @classmethod
    async def delivered(cls, ca_cert: Path, cert_path: Path, key_path: Path, wait: float) -> Self:
        """The TLS of certificate files that may still be on their way (a container driver
        copies them in while the agent boots): retried every 10 ms until they load, for at
        most ``wait`` seconds; then the last OSError (ssl.SSLError included) is raised."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return cls(ca_cert, cert_path, key_path)
            except OSError:
                if time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(_DELIVERY_POLL)

    def rotate(self, cert_pem: bytes, key_pem: bytes) -> x509.Certificate:
        """Validate, store (key 0600) and load a new server certificate; returns it.

        Raises ValidationFailed when the PEMs do not parse, the key does not match, the
        certificate is expired or it was not signed by the deployment CA; nothing changes then.
        """
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValidationFailed(f"unreadable certificate or key: {exc}") from exc
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        pem = serialization.Encoding.PEM
        if cert.public_key().public_bytes(pem, spki) != key.public_key().public_bytes(pem, spki):
            raise ValidationFailed("the private key does not match the certificate")
        if cert.not_valid_after_utc <= datetime.now(UTC):
            raise ValidationFailed("the certificate has expired")
        if not is_issued_by(cert_pem, self.ca_cert.read_bytes()):
            raise ValidationFailed("the certificate is not signed by the deployment CA")
        write_private_file(self.key_path, key_pem, durable=False)
        write_private_file(self.cert_path, cert_pem, mode=0o644, durable=False)
        self.context.load_cert_chain(str(self.cert_path), str(self.key_path))
        return cert
