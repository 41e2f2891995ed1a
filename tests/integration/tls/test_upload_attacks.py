"""Attacks on the key manager's uploads (secrets, certificate containers) and on the TLS
references that point at them: oversized bodies and payloads, and path traversal in every
id and reference. Each is refused with a 4xx in the API's error shape, never a 5xx, and
nothing is stored."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from tests.integration.api.conftest import SUBNET
from tests.integration.tls.conftest import KeyManagerApi

TRAVERSALS = (
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%5C..%5Cwindows%5Cwin.ini",
    "00000000-0000-0000-0000-000000000000%2F..%2F..",
    "%00",
)


def _barbican_error(body: Any) -> None:
    assert isinstance(body, dict) and {"code", "title", "description"} <= set(body), body


@pytest.mark.parametrize("path", ["/v1/secrets", "/v1/containers"])
async def test_oversized_upload_bodies_are_refused(km: KeyManagerApi, path: str) -> None:
    huge = {"name": "x", "payload": "A" * (2 * 1024 * 1024), "payload_content_type": "text/plain"}
    headers = {"X-Project-Id": km.a.project, "X-Roles": "member"}
    data = io.BytesIO(json.dumps(huge).encode())
    async with km.api.session.post(km.api.base + path, data=data, headers=headers) as reply:
        assert reply.status == 413, (reply.status, await reply.text())
        _barbican_error(await reply.json())
    assert (await km.a.call("GET", path)).body["total"] == 0


async def test_a_payload_over_the_secret_limit_is_refused(km: KeyManagerApi) -> None:
    blob = base64.b64encode(b"\x00" * (65536 + 1)).decode()
    body = {
        "payload": blob,
        "payload_content_type": "application/octet-stream",
        "payload_content_encoding": "base64",
    }
    reply = await km.a.call("POST", "/v1/secrets", body)
    assert reply.status == 400 and "larger than" in str(reply.body), reply.body
    assert (await km.a.call("GET", "/v1/secrets")).body["total"] == 0


async def test_path_traversal_in_secret_and_container_ids(km: KeyManagerApi) -> None:
    await km.a.secret("kept")
    for attack in TRAVERSALS:
        for method, path in (
            ("GET", f"/v1/secrets/{attack}"),
            ("GET", f"/v1/secrets/{attack}/payload"),
            ("DELETE", f"/v1/secrets/{attack}"),
            ("GET", f"/v1/containers/{attack}"),
            ("DELETE", f"/v1/containers/{attack}"),
        ):
            reply = await km.a.call(method, km.api.base + path)
            assert reply.status in (400, 404), (method, path, reply.status, reply.body)
    assert (await km.a.call("GET", "/v1/secrets")).body["total"] == 1


async def test_path_traversal_in_references(km: KeyManagerApi) -> None:
    ref = await km.a.secret("cert")
    base = km.api.base
    for attack in (
        f"{base}/v1/secrets/../../../etc/passwd",
        f"{ref}/../../containers/x",
        f"{base}/v1/secrets/..%2F..%2Fetc%2Fpasswd",
        "file:///etc/passwd",
        "../../etc/passwd",
    ):
        container = {
            "type": "certificate",
            "secret_refs": [{"name": "certificate", "secret_ref": attack}],
        }
        reply = await km.a.call("POST", "/v1/containers", container)
        assert reply.status in (400, 404), (attack, reply.status, reply.body)
        _barbican_error(reply.body)
    assert (await km.a.call("GET", "/v1/containers")).body["total"] == 0
    lb = await km.a.call(
        "POST", "/v2/lbaas/loadbalancers", {"loadbalancer": {"vip_subnet_id": SUBNET}}
    )
    await km.api.activate(lb.body["loadbalancer"]["id"])
    for attack in (f"{base}/v1/containers/../../../etc/passwd", "file:///etc/passwd"):
        listener = {
            "loadbalancer_id": lb.body["loadbalancer"]["id"],
            "protocol": "TERMINATED_HTTPS",
            "protocol_port": 443,
            "default_tls_container_ref": attack,
        }
        reply = await km.a.call("POST", "/v2/lbaas/listeners", {"listener": listener})
        assert reply.status in (400, 404), (attack, reply.status, reply.body)
        assert reply.fault()
