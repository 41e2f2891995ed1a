"""The deployment CA: files and permissions, issued certificates, and an OpenSSL handshake."""

from __future__ import annotations

import ipaddress
import ssl
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from libs.common.certificate_checks import certificate_not_after, is_issued_by
from libs.common.pki import DeploymentCA
from libs.common.private_files import write_private_file


@pytest.fixture
def ca(tmp_path: Path) -> DeploymentCA:
    return DeploymentCA.load_or_create(tmp_path / "ca")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_ca_files_with_private_key_0600(tmp_path: Path) -> None:
    ca = DeploymentCA.load_or_create(tmp_path / "ca")

    assert _mode(tmp_path / "ca" / "ca.key") == 0o600
    assert (tmp_path / "ca" / "ca.pem").read_bytes() == ca.cert_pem
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.not_after > datetime.now(UTC) + timedelta(days=3000)


def test_second_start_loads_the_same_ca(ca: DeploymentCA) -> None:
    again = DeploymentCA.load_or_create(ca.directory)

    assert again.cert.serial_number == ca.cert.serial_number
    assert again.key.private_numbers() == ca.key.private_numbers()


def test_concurrent_first_starts_agree_on_one_ca(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        cas = list(pool.map(lambda _: DeploymentCA.load_or_create(tmp_path / "ca"), range(8)))

    assert len({ca.cert.serial_number for ca in cas}) == 1


def test_server_cert_has_dns_and_ip_sans_and_server_usage(ca: DeploymentCA) -> None:
    cert_pem, key_pem = ca.issue_server_cert("amp-1", ["amp-1", "127.0.0.5", "::1"], 7)

    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["amp-1"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert is_issued_by(cert_pem, ca.cert_pem)


def test_client_cert_is_for_client_auth_only(ca: DeploymentCA) -> None:
    issued = ca.issue_client_cert("provisioner")

    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_not_after_is_readable_from_pem(ca: DeploymentCA) -> None:
    issued = ca.issue_server_cert("amp-1", [], validity_days=30)

    expected = datetime.now(UTC) + timedelta(days=30)
    assert abs(certificate_not_after(issued.cert_pem) - expected) < timedelta(minutes=1)
    assert issued.not_after == certificate_not_after(issued.cert_pem)


def test_a_certificate_from_another_ca_is_not_issued_by_ours(
    ca: DeploymentCA, tmp_path: Path
) -> None:
    other = DeploymentCA.load_or_create(tmp_path / "other")
    foreign = other.issue_client_cert("intruder")

    assert not is_issued_by(foreign.cert_pem, ca.cert_pem)
    assert not is_issued_by(b"not a pem", ca.cert_pem)


def test_write_private_file_replaces_atomically_with_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "secret.pem"
    write_private_file(target, b"one")
    write_private_file(target, b"two")

    assert target.read_bytes() == b"two"
    assert _mode(target) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["secret.pem"]


@pytest.mark.parametrize("durable", [True, False])
def test_write_private_file_syncs_only_when_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    synced: list[int] = []
    monkeypatch.setattr("libs.common.private_files.os.fsync", synced.append)
    target = tmp_path / "haproxy.cfg"

    write_private_file(target, b"one", durable=durable)

    assert target.read_bytes() == b"one"
    assert _mode(target) == 0o600
    assert len(synced) == (1 if durable else 0)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """Run a TLS handshake between two in-memory endpoints; raises ssl.SSLError on refusal."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=name)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for side, obj, out_bio, peer_in in (
            ("client", client_side, c_out, s_in),
            ("server", server_side, s_out, c_in),
        ):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out_bio.read())
        if all(done.values()):
            # TLS 1.3 reports a refused client certificate only on the first read.
            client_side.write(b"x")
            s_in.write(c_out.read())
            assert server_side.read(1) == b"x"
            return
    raise AssertionError("handshake did not finish")


def _contexts(
    ca: DeploymentCA, tmp_path: Path, client_ca: DeploymentCA
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server_cert, server_key = ca.issue_server_cert("amp-1", ["amp-1"])
    client_cert, client_key = client_ca.issue_client_cert("provisioner")
    for name, data in {
        "s.pem": server_cert,
        "s.key": server_key,
        "c.pem": client_cert,
        "c.key": client_key,
    }.items():
        write_private_file(tmp_path / name, data)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.verify_mode = ssl.CERT_REQUIRED
    server.verify_flags |= ssl.VERIFY_X509_STRICT
    server.load_verify_locations(cafile=str(ca.cert_path))
    server.load_cert_chain(tmp_path / "s.pem", tmp_path / "s.key")
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    client.load_cert_chain(tmp_path / "c.pem", tmp_path / "c.key")
    return server, client


def test_openssl_accepts_the_chain_in_strict_mode(ca: DeploymentCA, tmp_path: Path) -> None:
    server, client = _contexts(ca, tmp_path, client_ca=ca)

    _handshake(server, client, "amp-1")


def test_openssl_refuses_a_client_cert_from_another_ca(ca: DeploymentCA, tmp_path: Path) -> None:
    other = DeploymentCA.load_or_create(tmp_path / "other")
    server, client = _contexts(ca, tmp_path, client_ca=other)

    with pytest.raises(ssl.SSLError):
        _handshake(server, client, "amp-1")
