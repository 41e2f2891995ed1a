"""TLS material tenants hand over (through the key manager) and what HAProxy reads of it.

Pure: parses certificates, private keys (optionally passphrase-protected), PKCS12 bundles,
CA bundles and CRLs, checks them (readable, unexpired, key matching certificate, CRL issued by
the CA) and builds the PEM files HAProxy loads (certificate, intermediates, then the key
without a passphrase). Every refusal is a ``TlsMaterialError`` whose message says what is
wrong, so the API can answer 400 with it. Nothing here logs or keeps key material.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from libs.common.errors import FulcrumError

__all__ = [
    "CaBundle",
    "KeyPair",
    "Revocations",
    "TlsMaterialError",
    "check_ciphers",
    "load_ca_bundle",
    "load_crl",
    "load_keypair",
    "load_pkcs12",
    "looks_like_pkcs12",
]

_PEM_MARKER: Final = b"-----BEGIN"
# Ciphers strings are passed to OpenSSL (and HAProxy) as they are: keep them to its alphabet.
_CIPHER_ALPHABET: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_:+!@=.,"
)
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


class TlsMaterialError(FulcrumError, ValueError):
    """The material cannot be used; ``str(exc)`` tells the tenant why."""


def _spki(key: object) -> bytes:
    public = key.public_key()  # type: ignore[attr-defined]
    spki: bytes = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return spki


@dataclass(frozen=True)
class KeyPair:
    """A server or client certificate with its private key and chain."""

    certificate: x509.Certificate
    key: PrivateKey
    intermediates: tuple[x509.Certificate, ...] = ()

    def bundle_pem(self) -> bytes:
        """Certificate, intermediates, then the unencrypted key: HAProxy's `crt` file."""
        parts = [self.certificate.public_bytes(serialization.Encoding.PEM)]
        parts += [c.public_bytes(serialization.Encoding.PEM) for c in self.intermediates]
        parts.append(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return b"".join(parts)

    @property
    def subject_names(self) -> tuple[str, ...]:
        """The DNS names the certificate covers (SAN, else its common name)."""
        try:
            san = self.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = tuple(san.value.get_values_for_type(x509.DNSName))
            if names:
                return names
        except x509.ExtensionNotFound:
            pass
        cns = self.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return tuple(str(a.value) for a in cns)


@dataclass(frozen=True)
class CaBundle:
    """One or more CA certificates (client CA of a listener, member CA of a pool)."""

    certificates: tuple[x509.Certificate, ...]

    def pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certificates)


@dataclass(frozen=True)
class Revocations:
    """A certificate revocation list."""

    crl: x509.CertificateRevocationList

    def pem(self) -> bytes:
        return self.crl.public_bytes(serialization.Encoding.PEM)

    def check_issued_by(self, ca: CaBundle, what: str) -> None:
        """Raise unless one of ``ca``'s certificates signed this CRL (else HAProxy would
        refuse every client: their CRL cannot be found)."""
        for cert in ca.certificates:
            if cert.subject != self.crl.issuer:
                continue
            try:
                if self.crl.is_signature_valid(cert.public_key()):  # type: ignore[arg-type]
                    return
            except (TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
        raise TlsMaterialError(f"{what}: the revocation list is not signed by the given CA.")


def _certificates(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        if _PEM_MARKER in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise TlsMaterialError(f"{what}: could not read an X.509 certificate.") from None


def _check_current(cert: x509.Certificate, what: str, now: datetime) -> None:
    if cert.not_valid_after_utc < now:
        expired = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        raise TlsMaterialError(f"{what}: the certificate expired on {expired}.")


def _private_key(data: bytes, passphrase: bytes | None, what: str) -> PrivateKey:
    loader = (
        serialization.load_pem_private_key
        if _PEM_MARKER in data
        else serialization.load_der_private_key
    )
    try:
        key = loader(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            raise TlsMaterialError(
                f"{what}: the private key is encrypted and no private_key_passphrase was given."
            ) from None
        raise TlsMaterialError(
            f"{what}: a passphrase was given but the private key is not encrypted."
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if passphrase is not None:
            raise TlsMaterialError(
                f"{what}: wrong passphrase, or the private key is unreadable."
            ) from None
        raise TlsMaterialError(f"{what}: could not read the private key.") from None
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | dsa.DSAPrivateKey,
    ):
        raise TlsMaterialError(f"{what}: unsupported private key type.")
    return key


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def load_keypair(
    certificate: bytes,
    private_key: bytes | None,
    *,
    intermediates: bytes | None = None,
    passphrase: bytes | None = None,
    what: str = "certificate",
    now: datetime | None = None,
) -> KeyPair:
    """A certificate container's parts (PEM or DER) as a checked KeyPair.

    ``private_key`` None accepts a certificate secret holding the key too (a combined PEM).
    Raises TlsMaterialError: unreadable certificate or key, wrong or missing passphrase,
    expired certificate, key not matching the certificate.
    """
    if private_key is None:
        if _PEM_MARKER not in certificate or b"PRIVATE KEY-----" not in certificate:
            raise TlsMaterialError(f"{what}: the container holds no private_key.")
        private_key = certificate
    certs = _certificates(certificate, what)
    leaf, chain = certs[0], certs[1:]
    if intermediates:
        chain += _certificates(intermediates, f"{what} (intermediates)")
    key = _private_key(private_key, passphrase, what)
    if _spki(key) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise TlsMaterialError(f"{what}: the private key does not match the certificate.")
    _check_current(leaf, what, _now(now))
    return KeyPair(leaf, key, tuple(chain))


def load_pkcs12(
    data: bytes,
    *,
    passphrase: bytes | None = None,
    what: str = "certificate",
    now: datetime | None = None,
) -> KeyPair:
    """A PKCS12 bundle (as Octavia accepts a secret holding one as a container ref).

    Raises TlsMaterialError when it is not PKCS12, the passphrase is wrong, or it lacks a
    certificate or key, or the certificate expired.
    """
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TlsMaterialError(
            f"{what}: not a readable PKCS12 bundle (or it needs a passphrase)."
        ) from None
    if cert is None or key is None:
        raise TlsMaterialError(f"{what}: the PKCS12 bundle lacks a certificate or a key.")
    if not isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | dsa.DSAPrivateKey,
    ):
        raise TlsMaterialError(f"{what}: unsupported private key type.")
    if _spki(key) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise TlsMaterialError(f"{what}: the private key does not match the certificate.")
    _check_current(cert, what, _now(now))
    return KeyPair(cert, key, tuple(extra))


def looks_like_pkcs12(data: bytes) -> bool:
    """Binary DER (a SEQUENCE) rather than PEM text: worth trying as PKCS12."""
    return bool(data) and data[0] == 0x30 and _PEM_MARKER not in data


def load_ca_bundle(data: bytes, *, what: str = "CA certificate") -> CaBundle:
    """One or more CA certificates (PEM or one DER); expired CAs are refused."""
    certs = _certificates(data, what)
    now = _now(None)
    for cert in certs:
        _check_current(cert, what, now)
    return CaBundle(tuple(certs))


def load_crl(data: bytes, *, what: str = "revocation list") -> Revocations:
    """A PEM or DER CRL."""
    try:
        if _PEM_MARKER in data:
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
    except ValueError:
        raise TlsMaterialError(f"{what}: could not read a certificate revocation list.") from None
    return Revocations(crl)


def check_ciphers(ciphers: str, *, what: str = "tls_ciphers") -> None:
    """Raise unless OpenSSL reads ``ciphers`` and it selects at least one cipher."""
    bad = sorted(set(ciphers) - _CIPHER_ALPHABET)
    if bad:
        raise TlsMaterialError(f"{what}: invalid characters {''.join(bad)!r}.")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError:
        raise TlsMaterialError(f"{what}: {ciphers!r} selects no cipher OpenSSL knows.") from None
