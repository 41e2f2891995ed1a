"""The deployment's private CA: one self-signed ECDSA P-256 root that signs every amphora agent's
server certificate and the control plane's client certificates (mutual TLS to the agents).

Control plane only: the amphora checks certificates (``certificate_checks.py``) and never holds
the CA key. Keys are written 0600, atomically; certificates carry `not_after` so housekeeping
can rotate them.
"""

from __future__ import annotations

import fcntl
import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from libs.common.certificate_checks import certificate_not_after
from libs.common.private_files import write_private_file

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "DeploymentCA",
    "IssuedCertificate",
]

CA_CERT_FILE: Final = "ca.pem"
CA_KEY_FILE: Final = "ca.key"
_LOCK_FILE: Final = ".ca.lock"
_CA_VALIDITY_DAYS: Final = 3650
# Tolerates small clock skew between the control plane and a freshly booted amphora.
_BACKDATE: Final = timedelta(minutes=5)


class IssuedCertificate(NamedTuple):
    """A PEM certificate and its unencrypted PKCS#8 private key; unpacks as (cert, key)."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def not_after(self) -> datetime:
        return certificate_not_after(self.cert_pem)


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject_alt_names(sans: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


@dataclass(frozen=True)
class DeploymentCA:
    """The CA key and certificate, loaded from (or created in) one directory."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    directory: Path

    @classmethod
    def load_or_create(
        cls, directory: Path, common_name: str = "Fulcrum deployment CA"
    ) -> DeploymentCA:
        """Load `ca.pem`/`ca.key` from `directory`, creating both on first use.

        Safe against concurrent first starts: creation runs under an exclusive file lock, so
        every process ends up with the same CA. Raises TypeError when the key is not an EC key.
        """
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
        with open(directory / _LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (cert_path.exists() and key_path.exists()):
                key = ec.generate_private_key(ec.SECP256R1())
                write_private_file(key_path, _private_key_pem(key))
                write_private_file(cert_path, _self_signed_root(key, common_name), mode=0o644)
        key_loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key_loaded, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{key_path} does not hold an EC private key")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cls(cert=cert, key=key_loaded, directory=directory)

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def not_after(self) -> datetime:
        return self.cert.not_valid_after_utc

    def issue_server_cert(
        self, common_name: str, sans: list[str], validity_days: int = 30
    ) -> IssuedCertificate:
        """A TLS server certificate; `sans` entries that parse as IPs become IP SANs, the rest
        DNS SANs (an amphora's cert names its amphora id, which the client checks)."""
        return self._issue(
            common_name,
            validity_days,
            [ExtendedKeyUsageOID.SERVER_AUTH],
            _subject_alt_names(sans),
        )

    def issue_peer_cert(
        self, common_name: str, sans: list[str], validity_days: int = 365
    ) -> IssuedCertificate:
        """A certificate for both ends of TLS (serverAuth and clientAuth): a NATS node's,
        which serves clients and dials the other nodes' routes with it."""
        return self._issue(
            common_name,
            validity_days,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            _subject_alt_names(sans),
        )

    def issue_client_cert(
        self, common_name: str, validity_days: int = 30, sans: list[str] | None = None
    ) -> IssuedCertificate:
        """A TLS client certificate (extended key usage clientAuth only)."""
        return self._issue(
            common_name,
            validity_days,
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            _subject_alt_names(sans or []),
        )

    def _issue(
        self,
        common_name: str,
        validity_days: int,
        usages: list[x509.ObjectIdentifier],
        alt_names: list[x509.GeneralName],
    ) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(uuid.uuid4().int >> 1)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), False)
        cert = builder.sign(self.key, hashes.SHA256())
        return IssuedCertificate(
            cert.public_bytes(serialization.Encoding.PEM), _private_key_pem(key)
        )


def _self_signed_root(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(uuid.uuid4().int >> 1)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=_CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)
