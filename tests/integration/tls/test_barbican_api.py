"""The Barbican v1 subset over HTTP on a real Postgres: secrets, containers, project
isolation, encryption at rest, key rotation and deletion guards."""

from __future__ import annotations

import base64

import asyncpg

from libs.common.secretstore import Keyring, new_key
from tests.integration.tls.conftest import KeyManagerApi, MakeApi, Tenant
from tests.integration.tls.pki import CertAuthority


async def read_payload(tenant: Tenant, ref: str, accept: str) -> tuple[int, bytes, str]:
    headers = {"X-Project-Id": tenant.project, "X-Roles": tenant.roles, "Accept": accept}
    async with tenant.api.session.get(ref + "/payload", headers=headers) as reply:
        return reply.status, await reply.read(), reply.headers.get("Content-Type", "")


async def test_secret_store_show_payload_list_delete(km: KeyManagerApi) -> None:
    ref = await km.a.secret("s3cr3t-text", name="greeting")
    assert ref.startswith(km.api.base + "/v1/secrets/")
    shown = (await km.a.call("GET", ref, expect=200)).body
    assert shown["name"] == "greeting" and shown["status"] == "ACTIVE"
    assert shown["content_types"] == {"default": "text/plain"}
    assert "payload" not in shown
    status, payload, content_type = await read_payload(km.a, ref, "text/plain")
    assert (status, payload) == (200, b"s3cr3t-text")
    assert content_type.startswith("text/plain")
    # Binary payloads travel base64 and come back as bytes.
    blob = bytes(range(256))
    bref = await km.a.secret(blob)
    assert (await read_payload(km.a, bref, "application/octet-stream"))[1] == blob
    # Paging by limit and offset, with Barbican's total and next/previous links.
    for i in range(3):
        await km.a.secret(f"p{i}", name=f"page-{i}")
    page = (await km.a.call("GET", "/v1/secrets?limit=2&offset=1", expect=200)).body
    assert page["total"] == 5 and len(page["secrets"]) == 2
    assert page["next"].endswith("limit=2&offset=3") and page["previous"].endswith("offset=0")
    assert (await km.a.call("GET", "/v1/secrets?limit=0")).body["total"] == 5
    named = (await km.a.call("GET", "/v1/secrets?name=page-1")).body
    assert [s["name"] for s in named["secrets"]] == ["page-1"]
    await km.a.call("DELETE", ref, expect=204)
    gone = await km.a.call("GET", ref, expect=404)
    assert gone.body["title"] == "Not Found" and "description" in gone.body


async def test_another_projects_secret_is_refused(km: KeyManagerApi) -> None:
    ref = await km.a.secret("only-for-a")
    for path in (ref, ref + "/payload"):
        assert (await km.b.call("GET", path)).status == 404
    assert (await km.b.call("DELETE", ref)).status == 404
    assert (await km.b.call("GET", "/v1/secrets")).body["total"] == 0
    # B cannot put A's secret in its own container either.
    reply = await km.b.call(
        "POST",
        "/v1/containers",
        {"type": "certificate", "secret_refs": [{"name": "certificate", "secret_ref": ref}]},
    )
    assert reply.status == 404
    # A reader of A sees metadata but may not decrypt.
    reader = Tenant(km.api, km.a.project, roles="reader")
    assert (await reader.call("GET", ref)).status == 200
    assert (await reader.call("GET", ref + "/payload")).status == 403
    body = {"payload": "x", "payload_content_type": "text/plain"}
    assert (await reader.call("POST", "/v1/secrets", body)).status == 403


async def test_containers(km: KeyManagerApi, ca: CertAuthority) -> None:
    issued = ca.issue("www.test", dns=["www.test"])
    ref = await km.a.tls_container(issued)
    body = (await km.a.call("GET", ref, expect=200)).body
    assert body["type"] == "certificate"
    assert sorted(r["name"] for r in body["secret_refs"]) == ["certificate", "private_key"]
    listing = (await km.a.call("GET", "/v1/containers", expect=200)).body
    assert listing["total"] == 1 and listing["containers"][0]["container_ref"] == ref
    cert_ref = next(r["secret_ref"] for r in body["secret_refs"] if r["name"] == "certificate")
    # A secret held by a container cannot go first.
    assert (await km.a.call("DELETE", cert_ref)).status == 409
    bad = await km.a.call(
        "POST",
        "/v1/containers",
        {"type": "certificate", "secret_refs": [{"name": "cert", "secret_ref": cert_ref}]},
    )
    assert bad.status == 400 and "cert" in bad.body["description"]
    assert (await km.b.call("GET", ref)).status == 404
    await km.a.call("DELETE", ref, expect=204)
    await km.a.call("DELETE", cert_ref, expect=204)


async def test_payloads_are_sealed_at_rest_and_never_in_events(
    km: KeyManagerApi, pg_dsn: str
) -> None:
    marker = "PLAINTEXT-MARKER-0123456789"
    ref = await km.a.secret(marker)
    binary_marker = b"BINARY-MARKER-9876543210"
    await km.a.secret(binary_marker)
    conn = await asyncpg.connect(pg_dsn)
    try:
        sealed = await conn.fetch("SELECT sealed FROM secrets")
        assert all(marker.encode() not in r["sealed"] for r in sealed)
        assert all(binary_marker not in r["sealed"] for r in sealed)
        events = await conn.fetch("SELECT event_type, data::text AS data FROM events")
        types = {e["event_type"] for e in events}
        assert "SecretStored" in types
        dump = " ".join(e["data"] for e in events)
        assert marker not in dump and base64.b64encode(binary_marker).decode() not in dump
        await km.a.call("DELETE", ref, expect=204)
        secret_id = ref.rsplit("/", 1)[1]
        assert await conn.fetchval("SELECT count(*) FROM secrets WHERE id = $1", secret_id) == 0
        assert "SecretDeleted" in {
            r["event_type"] for r in await conn.fetch("SELECT event_type FROM events")
        }
    finally:
        await conn.close()


async def test_key_rotation(make_api: MakeApi, secret_keys: str, pg_dsn: str) -> None:
    old = await make_api(secret_keys=secret_keys)
    tenant = Tenant(old, "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3")
    ref = await tenant.secret("rotate-me")
    newer = new_key()
    both = Tenant(await make_api(secret_keys=f"{newer},{secret_keys}"), tenant.project)
    # Read under the old key, and re-sealed under the newer one.
    payload = await read_payload(both, ref.replace(old.base, both.api.base), "text/plain")
    assert payload[1] == b"rotate-me"
    conn = await asyncpg.connect(pg_dsn)
    try:
        key_id = await conn.fetchval("SELECT key_id FROM secrets")
    finally:
        await conn.close()
    assert key_id == Keyring.from_setting(newer).newest_id
    only_new = Tenant(await make_api(secret_keys=newer), tenant.project)
    payload = await read_payload(only_new, ref.replace(old.base, only_new.api.base), "text/plain")
    assert payload[1] == b"rotate-me"


async def test_barbican_version_and_errors(km: KeyManagerApi, make_api: MakeApi) -> None:
    version = (await km.a.call("GET", "/v1", expect=200)).body["version"]
    assert version["id"] == "v1" and version["max_version"] == "1.1"
    reply = await km.a.call("POST", "/v1/secrets", {"payload": "x"})
    assert reply.status == 400 and "payload_content_type" in reply.body["description"]
    reply = await km.a.call(
        "POST",
        "/v1/secrets",
        {"payload": "!!", "payload_content_type": "application/octet-stream"},
    )
    assert reply.status == 400 and "base64" in reply.body["description"]
    disabled = Tenant(await make_api(), km.a.project)
    assert (await disabled.call("GET", "/v1/secrets")).status == 404


async def test_in_use_objects_cannot_be_deleted(km: KeyManagerApi, ca: CertAuthority) -> None:
    issued = ca.issue("inuse.test", dns=["inuse.test"])
    container = await km.a.tls_container(issued)
    ca_ref = await km.a.secret(ca.cert_pem.decode())
    lb = await km.a.create_lb(
        [
            {
                "protocol": "TERMINATED_HTTPS",
                "protocol_port": 443,
                "default_tls_container_ref": container,
                "client_ca_tls_container_ref": ca_ref,
                "client_authentication": "OPTIONAL",
            }
        ]
    )
    await km.api.activate(lb["id"])
    reply = await km.a.call("DELETE", container)
    assert reply.status == 409 and "listener" in reply.body["description"]
    assert (await km.a.call("DELETE", ca_ref)).status == 409
    listener_id = lb["listeners"][0]["id"]
    await km.a.call("DELETE", f"/v2/lbaas/listeners/{listener_id}", expect=204)
    await km.api.settle(lb["id"])
    await km.a.call("DELETE", container, expect=204)
    await km.a.call("DELETE", ca_ref, expect=204)
