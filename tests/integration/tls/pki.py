"""Test certificates made with cryptography: a CA, server and client certificates, CRLs,
PKCS12 bundles and passphrase-protected keys (never fetched, never reused across runs)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def encrypted_key_pem(self, passphrase: bytes) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )

    def pkcs12(self, chain: list[x509.Certificate] | None = None) -> bytes:
        return pkcs12.serialize_key_and_certificates(
            b"bundle", self.key, self.cert, chain, serialization.NoEncryption()
        )

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


@dataclass
class CertAuthority:
    """A CA issuing server (SAN DNS names) and client certificates, and CRLs."""

    name: str = "Fulcrum Test CA"
    issued: Issued = field(init=False)
    serial: int = 100

    def __post_init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.name))
            .issuer_name(_name(self.name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .sign(key, hashes.SHA256())
        )
        self.issued = Issued(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.issued.cert_pem

    def issue(
        self,
        cn: str,
        *,
        dns: list[str] | None = None,
        ips: list[str] | None = None,
        client: bool = False,
        expired: bool = False,
    ) -> Issued:
        import ipaddress

        self.serial += 1
        key = ec.generate_private_key(ec.SECP256R1())
        start = _now() - dt.timedelta(days=10 if expired else 1)
        end = _now() - dt.timedelta(days=1) if expired else _now() + dt.timedelta(days=10)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.issued.cert.subject)
            .public_key(key.public_key())
            .serial_number(self.serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.issued.key, hashes.SHA256()), key)

    def crl(self, revoked: list[Issued]) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issued.cert.subject)
            .last_update(_now() - dt.timedelta(hours=1))
            .next_update(_now() + dt.timedelta(days=7))
        )
        for item in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(item.cert.serial_number)
                .revocation_date(_now() - dt.timedelta(minutes=5))
                .build()
            )
        crl = builder.sign(self.issued.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)
