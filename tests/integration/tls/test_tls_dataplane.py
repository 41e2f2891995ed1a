"""Real TLS through the VIP: the API and the provisioner (process driver, real agents and
HAProxy) with certificates from the key manager, and real HTTP(S) backends."""

from __future__ import annotations

import asyncio
import os
import ssl
import stat
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.integration.tls.conftest import (
    Backend,
    KeyManagerApi,
    Provisioner,
    StartBackend,
    Tenant,
    client_context,
    free_port,
    handshake,
    https_get,
)
from tests.integration.tls.pki import CertAuthority

pytestmark = pytest.mark.timeout(240)
VIP_PREFIX = "127.77."
SSL_HEADERS = [
    "X-SSL-Client-Verify",
    "X-SSL-Client-Has-Cert",
    "X-SSL-Client-DN",
    "X-SSL-Client-CN",
    "X-SSL-Issuer",
    "X-SSL-Client-SHA1",
    "X-SSL-Client-Not-Before",
    "X-SSL-Client-Not-After",
]


def http_pool(backends: list[Backend], **fields: Any) -> dict[str, Any]:
    return {
        "name": f"pool-{backends[0].port}",
        "protocol": "HTTP",
        "lb_algorithm": "ROUND_ROBIN",
        "members": [{"address": "127.0.0.1", "protocol_port": b.port} for b in backends],
        **fields,
    }


async def create_active(tenant: Tenant, listeners: list[dict[str, Any]]) -> dict[str, Any]:
    lb = await tenant.create_lb(listeners)
    await tenant.wait_lb(lb["id"])
    assert lb["vip_address"].startswith(VIP_PREFIX)
    return lb


def next_vip_port() -> int:
    # The API hands out VIPs from 127.77.0.10 up; the port is free on all of loopback.
    return free_port("127.77.0.10")


async def peer_certificate_cn(host: str, port: int, context: ssl.SSLContext, name: str) -> str:
    ssl_object, writer = await handshake(host, port, context, name)
    try:
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        subject = x509.load_der_x509_certificate(der).subject
        return str(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    finally:
        writer.close()


async def test_sni_alpn_and_tls_versions(
    km: KeyManagerApi,
    provisioner: Provisioner,
    backends: StartBackend,
    ca: CertAuthority,
    tmp_path: Path,
) -> None:
    backend = await backends("b0")
    default = await km.a.tls_container(ca.issue("default.test", dns=["default.test"]))
    sni = await km.a.tls_container(ca.issue("sni.test", dns=["sni.test", "www.sni.test"]))
    port = next_vip_port()
    lb = await create_active(
        km.a,
        [
            {
                "protocol": "TERMINATED_HTTPS",
                "protocol_port": port,
                "default_tls_container_ref": default,
                "sni_container_refs": [sni],
                "alpn_protocols": ["h2", "http/1.1"],
                "default_pool": http_pool([backend]),
            },
        ],
    )
    vip = lb["vip_address"]
    trust = client_context(ca)
    assert await peer_certificate_cn(vip, port, trust, "sni.test") == "sni.test"
    assert await peer_certificate_cn(vip, port, trust, "www.sni.test") == "sni.test"
    assert await peer_certificate_cn(vip, port, trust, "default.test") == "default.test"
    unverified = client_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    assert await peer_certificate_cn(vip, port, unverified, "unknown.test") == "default.test"
    status, body = await https_get(f"https://{vip}:{port}/", trust, host="sni.test")
    assert status == 200 and body["name"] == "b0"

    # ALPN: h2 when offered, http/1.1 otherwise.
    ssl_object, writer = await handshake(
        vip, port, client_context(ca, alpn=["h2", "http/1.1"]), "sni.test"
    )
    assert ssl_object.selected_alpn_protocol() == "h2"
    writer.close()
    ssl_object, writer = await handshake(
        vip, port, client_context(ca, alpn=["http/1.1"]), "sni.test"
    )
    assert ssl_object.selected_alpn_protocol() == "http/1.1"
    writer.close()

    # TLS 1.0 and 1.1 are refused by the default versions (TLSv1.2, TLSv1.3).
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        legacy = client_context(ca, minimum=version, maximum=version)
        legacy.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await handshake(vip, port, legacy, "default.test")
    # The control: this client does complete TLS 1.1 with a server that allows it (so the
    # refusal above is the listener's). HAProxy >= 2.2 itself defaults to `ssl-min-ver
    # TLSv1.2`, which the rendered `no-tlsv1x` keywords do not lower.
    assert await legacy_server_version(ca, tmp_path) == "TLSv1.1"


async def legacy_server_version(ca: CertAuthority, tmp_path: Path) -> str:
    cert, key = ca.issue("legacy.test", dns=["legacy.test"]).write(tmp_path, "legacy")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(cert), str(key))
    server_context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_context.minimum_version = ssl.TLSVersion.TLSv1_1

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    try:
        port = server.sockets[0].getsockname()[1]
        legacy = client_context(ca, minimum=ssl.TLSVersion.TLSv1_1, maximum=ssl.TLSVersion.TLSv1_1)
        legacy.set_ciphers("ALL:@SECLEVEL=0")
        ssl_object, writer = await handshake("127.0.0.1", port, legacy, "legacy.test")
        version = str(ssl_object.version())
        writer.close()
        return version
    finally:
        server.close()
        await server.wait_closed()


async def test_client_certificates_and_revocation(
    km: KeyManagerApi,
    provisioner: Provisioner,
    backends: StartBackend,
    ca: CertAuthority,
    tmp_path: Path,
) -> None:
    backend = await backends("b0")
    clients = CertAuthority("Client CA")
    good = clients.issue("alice", client=True)
    revoked = clients.issue("mallory", client=True)
    stranger = CertAuthority("Stranger CA").issue("eve", client=True)
    server = await km.a.tls_container(ca.issue("mtls.test", dns=["mtls.test"]))
    port = next_vip_port()
    lb = await create_active(
        km.a,
        [
            {
                "protocol": "TERMINATED_HTTPS",
                "protocol_port": port,
                "default_tls_container_ref": server,
                "client_authentication": "MANDATORY",
                "client_ca_tls_container_ref": await km.a.secret(clients.cert_pem.decode()),
                "client_crl_container_ref": await km.a.secret(clients.crl([revoked]).decode()),
                "insert_headers": {name: "true" for name in SSL_HEADERS},
                "default_pool": http_pool([backend]),
            }
        ],
    )
    url = f"https://{lb['vip_address']}:{port}/"
    status, body = await https_get(
        url, client_context(ca, client=good, tmp=tmp_path), host="mtls.test"
    )
    assert status == 200
    headers = body["headers"]
    assert headers["x-ssl-client-verify"] == "0"
    assert headers["x-ssl-client-has-cert"] == "1"
    assert headers["x-ssl-client-cn"].strip('"') == "alice"
    assert "CN=alice" in headers["x-ssl-client-dn"]
    assert "CN=Client CA" in headers["x-ssl-issuer"]
    assert len(headers["x-ssl-client-sha1"].strip('"')) == 40
    for name in ("x-ssl-client-not-before", "x-ssl-client-not-after"):
        assert headers[name]
    hits = backend.hits
    for refused in (None, revoked, stranger):
        context = client_context(ca, client=refused, tmp=tmp_path)
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            await https_get(url, context, host="mtls.test")
    assert backend.hits == hits  # nothing reached the member


async def _servers_up(provisioner: Provisioner, lb_id: str, expected: int) -> list[dict[str, Any]]:
    client, _ = await provisioner.agent(lb_id)
    deadline = time.monotonic() + 30
    while True:
        rows = [r for r in await client.stats() if r.get("svname") not in ("FRONTEND", "BACKEND")]
        if len(rows) == expected and all(str(r.get("status", "")).startswith("UP") for r in rows):
            return list(rows)
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.2)


async def test_reencryption_to_a_backend_that_checks_the_client_certificate(
    km: KeyManagerApi,
    provisioner: Provisioner,
    backends: StartBackend,
    tmp_path: Path,
) -> None:
    member_ca = CertAuthority("Member CA")
    lb_ca = CertAuthority("LB client CA")
    server_cert, server_key = member_ca.issue("127.0.0.1", ips=["127.0.0.1"]).write(
        tmp_path, "member"
    )
    member_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    member_tls.load_cert_chain(str(server_cert), str(server_key))
    member_tls.verify_mode = ssl.CERT_REQUIRED
    member_tls.load_verify_locations(cadata=lb_ca.cert_pem.decode())
    backend = await backends("tls-member", tls=member_tls)
    lb_client = await km.a.tls_container(lb_ca.issue("fulcrum-lb", client=True))
    member_ca_ref = await km.a.secret(member_ca.cert_pem.decode())
    port, hello_port = next_vip_port(), next_vip_port()

    def reencrypting(name: str, monitor: str) -> dict[str, Any]:
        return http_pool(
            [backend],
            name=name,
            tls_enabled=True,
            tls_container_ref=lb_client,
            ca_tls_container_ref=member_ca_ref,
            tls_versions=["TLSv1.2", "TLSv1.3"],
            alpn_protocols=["http/1.1"],
            healthmonitor={"type": monitor, "delay": 1, "timeout": 2, "max_retries": 1},
        )

    lb = await create_active(
        km.a,
        [
            {
                "protocol": "HTTP",
                "protocol_port": port,
                "default_pool": reencrypting("https-checked", "HTTPS"),
            },
            {
                "protocol": "HTTP",
                "protocol_port": hello_port,
                "default_pool": reencrypting("hello-checked", "TLS-HELLO"),
            },
        ],
    )
    await _servers_up(provisioner, lb["id"], expected=2)  # HTTPS and TLS-HELLO checks pass
    async with aiohttp.ClientSession() as session:
        for listener_port in (port, hello_port):
            async with session.get(f"http://{lb['vip_address']}:{listener_port}/") as response:
                assert response.status == 200
                body = await response.json()
            assert body["name"] == "tls-member" and body["peer"] == "fulcrum-lb"


def file_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def owner_only(directory: Path) -> bool:
    """Every file is 0600 and ours (HAProxy runs as the agent's user)."""
    return all(
        stat.S_IMODE(p.stat().st_mode) == 0o600 and p.stat().st_uid == os.geteuid()
        for p in directory.iterdir()
    )


async def test_rotation_under_load_drops_nothing_and_old_files_go(
    km: KeyManagerApi,
    provisioner: Provisioner,
    backends: StartBackend,
    ca: CertAuthority,
) -> None:
    backend = await backends("b0")
    first = ca.issue("rotate.test", dns=["rotate.test"])
    second = ca.issue("rotate.test", dns=["rotate.test"])
    port = next_vip_port()
    first_ref = await km.a.tls_container(first)
    lb = await create_active(
        km.a,
        [
            {
                "protocol": "TERMINATED_HTTPS",
                "protocol_port": port,
                "default_tls_container_ref": first_ref,
                "default_pool": http_pool([backend]),
            }
        ],
    )
    listener_id = lb["listeners"][0]["id"]
    client, info = await provisioner.agent(lb["id"])
    certs_dir = Path(info.certs_dir)
    before = file_names(certs_dir)
    assert any(n.startswith("crt-") for n in before) and any(
        n.startswith("crtlist-") for n in before
    )
    assert owner_only(certs_dir)

    trust = client_context(ca)
    url = f"https://{lb['vip_address']}:{port}/"
    serials: set[int] = set()
    failures: list[str] = []
    done = asyncio.Event()
    counts = {"new": 0, "keepalive": 0}

    async def new_connections() -> None:
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            try:
                ssl_object, writer = await handshake(lb["vip_address"], port, trust, "rotate.test")
                cert = ssl_object.getpeercert(binary_form=True)
                writer.close()
                assert cert is not None
                serials.add(x509.load_der_x509_certificate(cert).serial_number)
                status, _ = await https_get(url, trust, host="rotate.test")
                if status != 200:
                    failures.append(f"status {status}")
                counts["new"] += 1
            except (OSError, aiohttp.ClientError, ssl.SSLError) as exc:
                failures.append(repr(exc))

    async def keep_alive() -> None:
        deadline = time.monotonic() + 60
        connector = aiohttp.TCPConnector(ssl=trust, limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    async with session.get(url, server_hostname="rotate.test") as response:
                        await response.read()
                        if response.status != 200:
                            failures.append(f"status {response.status}")
                    counts["keepalive"] += 1
                except (OSError, aiohttp.ClientError) as exc:
                    failures.append(repr(exc))

    workers = [asyncio.create_task(new_connections()) for _ in range(2)]
    workers.append(asyncio.create_task(keep_alive()))
    try:
        await asyncio.sleep(0.5)
        new_ref = await km.a.tls_container(second)
        await km.a.call(
            "PUT",
            f"/v2/lbaas/listeners/{listener_id}",
            {"listener": {"default_tls_container_ref": new_ref}},
            expect=200,
        )
        await km.a.wait_lb(lb["id"])
        deadline = time.monotonic() + 10
        while second.cert.serial_number not in serials and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        done.set()
        await asyncio.gather(*workers)
    assert not failures, failures[:5]
    assert {first.cert.serial_number, second.cert.serial_number} <= serials
    assert counts["new"] > 5 and counts["keepalive"] > 5, counts
    after = file_names(certs_dir)
    assert not set(after) & {n for n in before if n.startswith(("crt-", "crtlist-"))}
    assert len([n for n in after if n.startswith("crtlist-")]) == 1

    # The first container is no longer used: it can go; the second cannot, until its
    # listener is deleted, which also removes the files from the amphora.
    await km.a.call("DELETE", first_ref, expect=204)
    assert (await km.a.call("DELETE", new_ref)).status == 409
    await km.a.call("DELETE", f"/v2/lbaas/listeners/{listener_id}", expect=204)
    await km.a.wait_lb(lb["id"])
    assert not [n for n in file_names(certs_dir) if n.startswith(("crt", "ca-", "crl-"))]
    await km.a.call("DELETE", new_ref, expect=204)
