"""What a holder of the deployment CA's certificate (not its key) checks of a certificate:
who issued it and when it expires. Signing lives in ``pki.py``, which the amphora never imports.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature

__all__ = ["certificate_not_after", "is_issued_by"]


def certificate_not_after(cert_pem: bytes) -> datetime:
    """Expiry (timezone-aware UTC) of the first certificate in `cert_pem`."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def is_issued_by(cert_pem: bytes, ca_cert_pem: bytes) -> bool:
    """True when the first certificate in `cert_pem` carries a valid signature of the CA."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_cert_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
