"""Pure TLS material handling: parsing, checks and bundles (libs/common/tls.py), reference
parsing and sealing (libs/common/secretstore.py), and the provisioner's delivery plan."""

from __future__ import annotations

import asyncio

import pytest
from cryptography import x509

from libs.common.domain.model import LoadBalancerState, ProvisioningStatus
from libs.common.secretstore import Keyring, SecretKeyMissing, new_key, parse_ref
from libs.common.tls import (
    CaBundle,
    KeyPair,
    Revocations,
    TlsMaterialError,
    check_ciphers,
    load_ca_bundle,
    load_crl,
    load_keypair,
    load_pkcs12,
)
from services.provisioner.certificates import (
    CertificateUnavailable,
    manifest_line,
    manifest_of,
    plan_tls,
)
from tests import builders as b
from tests.integration.tls.pki import CertAuthority


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return CertAuthority()


def test_keypair_checks(ca: CertAuthority) -> None:
    good, other = ca.issue("a.test", dns=["a.test"]), ca.issue("b.test")
    pair = load_keypair(good.cert_pem, good.key_pem, intermediates=ca.cert_pem)
    assert pair.subject_names == ("a.test",)
    bundle = pair.bundle_pem()
    assert bundle.index(b"CERTIFICATE") < bundle.index(b"PRIVATE KEY")
    assert len(x509.load_pem_x509_certificates(bundle)) == 2
    with pytest.raises(TlsMaterialError, match="does not match"):
        load_keypair(good.cert_pem, other.key_pem)
    with pytest.raises(TlsMaterialError, match="expired"):
        expired = ca.issue("old.test", expired=True)
        load_keypair(expired.cert_pem, expired.key_pem)
    with pytest.raises(TlsMaterialError, match="X.509"):
        load_keypair(b"junk", good.key_pem)
    locked = good.encrypted_key_pem(b"pw")
    assert load_keypair(good.cert_pem, locked, passphrase=b"pw").certificate == good.cert
    with pytest.raises(TlsMaterialError, match="wrong passphrase"):
        load_keypair(good.cert_pem, locked, passphrase=b"nope")
    with pytest.raises(TlsMaterialError, match="no private_key_passphrase"):
        load_keypair(good.cert_pem, locked)
    combined = load_keypair(good.cert_pem + good.key_pem, None)
    assert combined.certificate == good.cert


def test_pkcs12_ca_crl_and_ciphers(ca: CertAuthority) -> None:
    good = ca.issue("p.test")
    assert load_pkcs12(good.pkcs12([ca.issued.cert])).intermediates == (ca.issued.cert,)
    with pytest.raises(TlsMaterialError, match="PKCS12"):
        load_pkcs12(b"\x30\x03junk")
    bundle = load_ca_bundle(ca.cert_pem)
    crl = load_crl(ca.crl([good]))
    crl.check_issued_by(bundle, "crl")
    with pytest.raises(TlsMaterialError, match="not signed"):
        load_crl(CertAuthority("Other").crl([])).check_issued_by(bundle, "crl")
    check_ciphers("ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=1")
    for bad in ("NOPE", "AES128 SHA", "A;B"):
        with pytest.raises(TlsMaterialError):
            check_ciphers(bad)


def test_refs_and_sealing() -> None:
    uid = "3f0e1c55-9a53-4a8e-9b21-0e7f3e4b5c6d"
    assert parse_ref(f"http://x:1/v1/containers/{uid}").kind == "containers"  # type: ignore[union-attr]
    assert parse_ref(f"https://kms/v1/secrets/{uid}/").id == uid  # type: ignore[union-attr]
    assert parse_ref(uid).kind is None  # type: ignore[union-attr]
    assert parse_ref("http://x/v1/containers/nope") is None
    old, new = new_key(), new_key()
    sealed_by_old = Keyring.from_setting(old).seal(uid, b"payload")
    both = Keyring.from_setting(f"{new}, {old}")
    assert both.open(uid, *sealed_by_old) == b"payload"
    assert both.seal(uid, b"x")[0] == both.newest_id != sealed_by_old[0]
    with pytest.raises(SecretKeyMissing):  # bound to its secret: not movable to another row
        both.open("another-id", *sealed_by_old)
    with pytest.raises(SecretKeyMissing):
        Keyring.from_setting(new).open(uid, *sealed_by_old)
    with pytest.raises(ValueError, match="#2"):
        Keyring.from_setting(f"{new},!!!")


class Source:
    def __init__(self, pairs: dict[str, KeyPair], ca: CaBundle, crl: Revocations) -> None:
        self.pairs, self.ca, self.revocations = pairs, ca, crl

    async def keypair(self, ref: str, project_id: str | None, what: str) -> KeyPair:
        return self.pairs[ref]

    async def ca_bundle(self, ref: str, project_id: str | None, what: str) -> CaBundle:
        return self.ca

    async def crl(self, ref: str, project_id: str | None, what: str) -> Revocations:
        return self.revocations


def test_delivery_plan(ca: CertAuthority) -> None:
    a, s = ca.issue("a.test"), ca.issue("s.test")
    source = Source(
        {
            "ref-a": load_keypair(a.cert_pem, a.key_pem),
            "ref-s": load_keypair(s.cert_pem, s.key_pem),
        },
        load_ca_bundle(ca.cert_pem),
        load_crl(ca.crl([])),
    )
    lb = b.loadbalancer("127.0.0.1")
    listener = b.listener(
        lb,
        443,
        "TERMINATED_HTTPS",
        default_tls_container_ref="ref-a",
        sni_container_refs=("ref-s",),
        client_ca_tls_container_ref="ca",
        client_crl_container_ref="crl",
        provisioning_status=ProvisioningStatus.ACTIVE,
    )
    state = LoadBalancerState(loadbalancer=lb, listeners={listener.id: listener})
    plan = asyncio.run(plan_tls(state, source, "/certs"))
    files = plan.listener_tls[listener.id]
    crt_list = next(f for f in plan.files.values() if f.name.startswith("crtlist-")).content
    lines = [line for line in crt_list.decode().splitlines() if not line.startswith("#")]
    assert len(lines) == 2 and all(line.startswith("/certs/crt-") for line in lines)
    default = plan.files[lines[0].removeprefix("/certs/").removesuffix(".pem")].content
    assert x509.load_pem_x509_certificates(default)[0] == a.cert  # the default comes first
    assert x509.load_pem_x509_certificates(crt_list)[0] == a.cert  # the agent's PEM check
    assert files.client_ca and files.client_crl and files.crt_list.startswith("/certs/crtlist-")
    again = asyncio.run(plan_tls(state, source, "/certs"))
    assert set(again.files) == set(plan.files)  # names follow content: stable
    text = "global\n" + manifest_line(plan.files)
    assert manifest_of(text) == set(plan.files) and manifest_of("global\n") == set()
    with pytest.raises(CertificateUnavailable):
        asyncio.run(plan_tls(state, None, "/certs"))
