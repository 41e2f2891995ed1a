"""PEM bundles HAProxy reads (`crt <state>/certs/<name>.pem`), stored 0600 by the agent."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography import x509

from libs.common.agent_contract import CERT_NAME_PATTERN, CertificateStored
from libs.common.errors import NotFound, ValidationFailed
from libs.common.private_files import write_private_file

_CERT_NAME = re.compile(CERT_NAME_PATTERN)


class CertificateDirectory:
    """`<name>.pem` files in one directory; names match CERT_NAME_PATTERN (no paths)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        if not _CERT_NAME.fullmatch(name):
            raise ValidationFailed(f"invalid certificate name {name!r}")
        return self.directory / f"{name}.pem"

    def put(self, name: str, pem: bytes) -> CertificateStored:
        """Store (or replace) a bundle holding at least one PEM certificate; idempotent."""
        path = self._path(name)
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise ValidationFailed(f"{name}.pem holds no readable PEM certificate") from exc
        write_private_file(path, pem, durable=False)
        return CertificateStored(name=name, sha256=hashlib.sha256(pem).hexdigest(), path=str(path))

    def get(self, name: str) -> CertificateStored:
        """Raises NotFound when the bundle is absent."""
        path = self._path(name)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise NotFound(f"certificate {name}.pem not found") from None
        return CertificateStored(name=name, sha256=digest, path=str(path))

    def delete(self, name: str) -> None:
        """Remove the bundle; absent is fine."""
        self._path(name).unlink(missing_ok=True)
