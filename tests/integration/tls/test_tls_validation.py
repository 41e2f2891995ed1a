"""Listener and pool TLS attributes are checked before anything is written: each refusal is a
400 that names the field and the problem, and nothing reaches the event store."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from tests.integration.api.conftest import SUBNET
from tests.integration.tls.conftest import KeyManagerApi
from tests.integration.tls.pki import CertAuthority


async def _lb(km: KeyManagerApi) -> str:
    body = {"loadbalancer": {"vip_subnet_id": SUBNET}}
    lb = (await km.a.call("POST", "/v2/lbaas/loadbalancers", body, expect=201)).body
    await km.api.activate(lb["loadbalancer"]["id"])
    return str(lb["loadbalancer"]["id"])


def _listener(lb_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "listener": {
            "loadbalancer_id": lb_id,
            "protocol": "TERMINATED_HTTPS",
            "protocol_port": 443,
            **fields,
        }
    }


async def _refused(km: KeyManagerApi, body: dict[str, Any], *words: str) -> None:
    reply = await km.a.call("POST", "/v2/lbaas/listeners", body)
    assert reply.status == 400, reply.body
    message = reply.fault()
    for word in words:
        assert word in message, message


async def test_certificate_problems_are_named(
    km: KeyManagerApi, ca: CertAuthority, pg_dsn: str
) -> None:
    lb_id = await _lb(km)
    good = ca.issue("ok.test", dns=["ok.test"])
    other = ca.issue("other.test", dns=["other.test"])
    expired = ca.issue("old.test", dns=["old.test"], expired=True)

    garbage = await km.a.container(
        {
            "certificate": await km.a.secret("not a certificate"),
            "private_key": await km.a.secret(good.key_pem.decode()),
        }
    )
    await _refused(
        km,
        _listener(lb_id, default_tls_container_ref=garbage),
        "default_tls_container_ref",
        "could not read an X.509 certificate",
    )
    expired_ref = await km.a.tls_container(expired)
    await _refused(km, _listener(lb_id, default_tls_container_ref=expired_ref), "expired")
    mismatched = await km.a.container(
        {
            "certificate": await km.a.secret(good.cert_pem.decode()),
            "private_key": await km.a.secret(other.key_pem.decode()),
        }
    )
    await _refused(km, _listener(lb_id, default_tls_container_ref=mismatched), "does not match")
    wrong_pass = await km.a.container(
        {
            "certificate": await km.a.secret(good.cert_pem.decode()),
            "private_key": await km.a.secret(good.encrypted_key_pem(b"right").decode()),
            "private_key_passphrase": await km.a.secret("wrong"),
        }
    )
    await _refused(km, _listener(lb_id, default_tls_container_ref=wrong_pass), "passphrase")
    no_pass = await km.a.container(
        {
            "certificate": await km.a.secret(good.cert_pem.decode()),
            "private_key": await km.a.secret(good.encrypted_key_pem(b"right").decode()),
        }
    )
    await _refused(km, _listener(lb_id, default_tls_container_ref=no_pass), "passphrase")
    unknown = km.api.base + "/v1/containers/3f0e1c55-9a53-4a8e-9b21-0e7f3e4b5c6d"
    await _refused(km, _listener(lb_id, default_tls_container_ref=unknown), "no such container")
    foreign = await km.b.tls_container(good)
    await _refused(km, _listener(lb_id, default_tls_container_ref=foreign), "no such container")
    await _refused(km, _listener(lb_id, sni_container_refs=[garbage]), "sni_container_refs")
    await _refused(km, _listener(lb_id), "certificate container reference must be provided")

    conn = await asyncpg.connect(pg_dsn)
    try:
        listeners = await conn.fetchval("SELECT count(*) FROM listener_view")
    finally:
        await conn.close()
    assert listeners == 0

    # Valid: a passphrase-protected key with the right passphrase, and a PKCS12 secret.
    with_pass = await km.a.tls_container(good, passphrase=b"right")
    await km.a.call(
        "POST",
        "/v2/lbaas/listeners",
        _listener(lb_id, default_tls_container_ref=with_pass),
        expect=201,
    )
    await km.api.settle(lb_id)
    pkcs12 = await km.a.secret(good.pkcs12(), secret_type="opaque")
    await km.a.call(
        "POST",
        "/v2/lbaas/listeners",
        _listener(lb_id, protocol_port=8443, default_tls_container_ref=pkcs12),
        expect=201,
    )


async def test_client_authentication_versions_ciphers_alpn(
    km: KeyManagerApi, ca: CertAuthority
) -> None:
    lb_id = await _lb(km)
    cert = await km.a.tls_container(ca.issue("ok.test", dns=["ok.test"]))
    ca_ref = await km.a.secret(ca.cert_pem.decode())
    crl_ref = await km.a.secret(ca.crl([]).decode())
    stranger_crl = await km.a.secret(CertAuthority("Other CA").crl([]).decode())
    base = {"default_tls_container_ref": cert}
    await _refused(km, _listener(lb_id, **base, client_authentication="MANDATORY"), "client CA")
    await _refused(
        km,
        _listener(lb_id, **base, client_crl_container_ref=crl_ref),
        "revocation list",
    )
    await _refused(
        km,
        _listener(
            lb_id,
            **base,
            client_authentication="MANDATORY",
            client_ca_tls_container_ref=ca_ref,
            client_crl_container_ref=stranger_crl,
        ),
        "not signed by the given CA",
    )
    not_a_crl = await km.a.secret("garbage")
    await _refused(
        km,
        _listener(
            lb_id,
            **base,
            client_ca_tls_container_ref=ca_ref,
            client_crl_container_ref=not_a_crl,
        ),
        "client_crl_container_ref",
    )
    await _refused(km, _listener(lb_id, **base, tls_versions=["TLSv1.4"]), "tls_versions")
    await _refused(km, _listener(lb_id, **base, tls_versions=[]), "tls_versions")
    await _refused(km, _listener(lb_id, **base, alpn_protocols=["h3"]), "alpn_protocols")
    await _refused(km, _listener(lb_id, **base, tls_ciphers="NOT-A-CIPHER"), "tls_ciphers")
    await _refused(km, _listener(lb_id, **base, tls_ciphers="AES128 SHA"), "tls_ciphers")
    http = {"listener": {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80}}
    http["listener"]["default_tls_container_ref"] = cert
    await _refused(
        km, http, "Certificate container references are not allowed on HTTP protocol listeners."
    )
    listener = (
        await km.a.call(
            "POST",
            "/v2/lbaas/listeners",
            _listener(
                lb_id,
                **base,
                client_authentication="MANDATORY",
                client_ca_tls_container_ref=ca_ref,
                client_crl_container_ref=crl_ref,
                tls_versions=["TLSv1.2", "TLSv1.3"],
                alpn_protocols=["h2", "http/1.1"],
                tls_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
                insert_headers={"X-SSL-Client-CN": "true"},
            ),
            expect=201,
        )
    ).body["listener"]
    await km.api.settle(lb_id)
    # An update is checked the same way.
    reply = await km.a.call(
        "PUT",
        f"/v2/lbaas/listeners/{listener['id']}",
        {"listener": {"sni_container_refs": [km.api.base + "/v1/containers/not-a-uuid"]}},
    )
    assert reply.status == 400 and "sni_container_refs" in reply.fault()


@pytest.mark.parametrize("field", ["tls_container_ref", "ca_tls_container_ref"])
async def test_pool_references_are_checked(
    km: KeyManagerApi, ca: CertAuthority, field: str
) -> None:
    lb_id = await _lb(km)
    bad = await km.a.secret("nope")
    body = {
        "pool": {
            "loadbalancer_id": lb_id,
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "tls_enabled": True,
            field: bad,
        }
    }
    reply = await km.a.call("POST", "/v2/lbaas/pools", body)
    assert reply.status == 400 and field in reply.fault(), reply.body
    crl = await km.a.secret(ca.crl([]).decode())
    body["pool"] = {k: v for k, v in body["pool"].items() if k != field}
    body["pool"]["crl_container_ref"] = crl
    reply = await km.a.call("POST", "/v2/lbaas/pools", body)
    assert reply.status == 400 and "CA certificate reference is required" in reply.fault()


async def test_single_call_create_checks_nested_references(km: KeyManagerApi) -> None:
    bad = await km.a.secret("nope")
    reply = await km.a.call(
        "POST",
        "/v2/lbaas/loadbalancers",
        {
            "loadbalancer": {
                "vip_subnet_id": SUBNET,
                "listeners": [
                    {
                        "protocol": "TERMINATED_HTTPS",
                        "protocol_port": 443,
                        "default_tls_container_ref": bad,
                    }
                ],
            }
        },
    )
    assert reply.status == 400 and "default_tls_container_ref" in reply.fault()
