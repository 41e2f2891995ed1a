"""TLS termination as a user drives it: the real ``openstack secret store`` / ``secret
container create`` (python-barbicanclient through the Keystone catalog's ``key-manager``),
then ``loadbalancer listener create --protocol TERMINATED_HTTPS``, and HTTPS through the VIP."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Backend, Cli, CliSession, Stack, cloud_cli, free_port
from tests.integration.tls.pki import CertAuthority

pytestmark = pytest.mark.timeout(600)


async def as_json(cli: Cli | CliSession, *args: str) -> Any:
    return json.loads((await cli(*args, "-f", "json")).out)


async def https_text(url: str, trust: ssl.SSLContext, host: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url, ssl=trust, server_hostname=host, headers={"Connection": "close"}
        ) as response:
            assert response.status == 200
            return await response.text()


async def test_secret_store_container_and_terminated_https_listener(
    stack: Stack, backends: list[Backend], tmp_path: Path
) -> None:
    cli = cloud_cli(stack, "fulcrum")
    ca = CertAuthority("E2E CA")
    issued = ca.issue("shop.test", dns=["shop.test"])
    key_file = tmp_path / "shop.key"
    key_file.write_bytes(issued.key_pem)

    # The certificate goes in as `--payload` (multi-line: a separate run, not a session line),
    # while the session starts.
    storing = asyncio.create_task(
        as_json(
            cli,
            "secret",
            "store",
            "--name",
            "shop-cert",
            "--payload-content-type",
            "text/plain",
            "--payload",
            issued.cert_pem.decode(),
        )
    )
    async with cli.session() as session:
        key = await as_json(
            session, "secret", "store", "--name", "shop-key", "--file", str(key_file)
        )
        cert = await storing
        cert_ref = cert["Secret href"]
        assert cert_ref.startswith(stack.api_url + "/v1/secrets/")
        container = await as_json(
            session, "secret", "container", "create", "--name", "shop-tls", "--type",
            "certificate", "--secret", f"certificate={cert_ref}",
            "--secret", f"private_key={key['Secret href']}",
        )  # fmt: skip
        container_ref = container["Container href"]
        # (`-f json` of these two trips over the client's own datetimes: plain values instead.)
        shown = await session(
            "secret", "container", "get", container_ref, "-f", "value", "-c", "Type"
        )
        assert shown.out.strip() == "certificate"
        names = (await session("secret", "list", "-f", "value", "-c", "Name")).out.split()
        assert {"shop-cert", "shop-key"} <= set(names)
        payload = await session(
            "secret", "get", "--payload", cert_ref, "-f", "value", "-c", "Payload"
        )
        assert payload.out.strip() == issued.cert_pem.decode().strip()

        lb = await as_json(
            session, "loadbalancer", "create", "--name", "tls-lb", "--vip-subnet", "public-subnet"
        )
        vip = lb["vip_address"]
        await session.wait_for_status("loadbalancer", "show", "tls-lb")
        port = free_port()
        listener = await as_json(
            session, "loadbalancer", "listener", "create", "--name", "shop", "--protocol",
            "TERMINATED_HTTPS", "--protocol-port", str(port), "--default-tls-container-ref",
            container_ref, "tls-lb",
        )  # fmt: skip
        assert listener["default_tls_container_ref"] == container_ref
        await session.wait_for_status("loadbalancer", "show", "tls-lb")
        await session.apply(
            "tls-lb",
            "loadbalancer", "pool", "create", "--name", "shop-pool", "--protocol", "HTTP",
            "--lb-algorithm", "ROUND_ROBIN", "--listener", "shop",
        )  # fmt: skip
        await session.apply(
            "tls-lb",
            "loadbalancer", "member", "create", "--subnet-id", "public-subnet", "--address",
            "127.0.0.1", "--protocol-port", str(backends[0].port), "shop-pool",
        )  # fmt: skip
        trust = ssl.create_default_context(cadata=ca.cert_pem.decode())
        assert await https_text(f"https://{vip}:{port}/", trust, "shop.test") == "backend-0"

        # A PKCS12 bundle stored as a secret serves as a listener's certificate directly.
        bundle = tmp_path / "shop.p12"
        bundle.write_bytes(ca.issue("p12.test", dns=["p12.test"]).pkcs12())
        p12 = await as_json(session, "secret", "store", "--name", "shop-p12", "--file", str(bundle))
        p12_port = free_port()
        await session.apply(
            "tls-lb",
            "loadbalancer", "listener", "create", "--name", "shop-p12", "--protocol",
            "TERMINATED_HTTPS", "--protocol-port", str(p12_port), "--default-tls-container-ref",
            p12["Secret href"], "--default-pool", "shop-pool", "tls-lb",
        )  # fmt: skip
        assert await https_text(f"https://{vip}:{p12_port}/", trust, "p12.test") == "backend-0"

        # Separate runs at once, for their exit status: a container in use cannot be deleted,
        # and a bad reference is refused with the reason.
        refused, bad = await asyncio.gather(
            cli("secret", "container", "delete", container_ref, check=False),
            cli(
                "loadbalancer",
                "listener",
                "create",
                "--protocol",
                "TERMINATED_HTTPS",
                "--protocol-port",
                str(free_port()),
                "--default-tls-container-ref",
                cert_ref,
                "tls-lb",
                check=False,
            ),
        )
        assert refused.code != 0 and "in use" in (refused.err + refused.out)
        assert bad.code != 0 and "private_key" in bad.err, bad.err

        await session("loadbalancer", "delete", "--cascade", "tls-lb")
        await session.wait_for_status("loadbalancer", "list", "--name", "tls-lb", status="")
        await session("secret", "container", "delete", container_ref)
        for ref in (cert_ref, key["Secret href"], p12["Secret href"]):
            await session("secret", "delete", ref)
