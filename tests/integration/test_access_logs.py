"""Access logs and log offloading with a real HAProxy and real syslog receivers (UDP sockets
on loopback): the tenant target gets Octavia's access-log line for each connection through
the VIP (local0, info), TCP listeners with `-` for the HTTP fields; the admin target gets
notices only (local1); ``connection_logging`` false sends no access log at all."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.provisioner.rendering import LogOffload, LogTarget, RenderContext, render_haproxy
from tests.integration.test_dataplane_traffic import (  # noqa: F401 (fixtures)
    HAPROXY,
    VIP,
    client,
    fetch,
    free_port,
    haproxy,
    http_pool,
    members,
)
from tests.unit.test_rendering import StateBuilder

WAIT_S = 5.0
# `<PRI>` of a syslog message: facility * 8 + severity.
LOCAL0_INFO, LOCAL1 = 16 * 8 + 6, 17


class Receiver(asyncio.DatagramProtocol):
    """A UDP syslog receiver on 127.0.0.1 keeping every message."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.messages.append(data.decode(errors="replace"))

    async def wait_for(self, pattern: str) -> str:
        """The first message matching ``pattern`` (bounded wait)."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for message in self.messages:
                if re.search(pattern, message):
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"no message like {pattern!r} in {self.messages}")


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[Receiver, LogTarget, Receiver, LogTarget]]:
    loop = asyncio.get_running_loop()
    transports = []
    made: list[Any] = []
    for _ in range(2):
        transport, protocol = await loop.create_datagram_endpoint(
            Receiver, local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        port = transport.get_extra_info("sockname")[1]
        made += [protocol, LogTarget(host="127.0.0.1", port=port)]
    try:
        yield made[0], made[1], made[2], made[3]
    finally:
        for transport in transports:
            transport.close()


def _priority(message: str) -> int:
    match = re.match(r"<(\d+)>", message)
    assert match, message
    return int(match.group(1))


async def test_access_log_lines_reach_the_tenant_target_notices_the_admin_target(
    members: Any,  # noqa: F811
    haproxy: Any,  # noqa: F811
    receivers: tuple[Receiver, LogTarget, Receiver, LogTarget],
) -> None:
    tenant, tenant_target, admin, admin_target = receivers
    (server,) = await members(1)
    b = StateBuilder(VIP)
    http_port, tcp_port = free_port(VIP), free_port(VIP)
    http_listener = b.listener("HTTP", http_port)
    http_pool_id = http_pool(b, http_listener, "ROUND_ROBIN", [server])
    tcp_listener = b.listener("TCP", tcp_port)
    tcp_pool = b.pool("TCP", "ROUND_ROBIN", listener=tcp_listener)
    tcp_member = b.member(tcp_pool, "127.0.0.1", server.port, name="tcp-member")
    # A member nobody answers for, checked every second: its DOWN is an admin notice.
    dead = b.member(tcp_pool, "127.0.0.1", free_port("127.0.0.1"), name="dead")
    b.monitor(tcp_pool, "TCP", delay=1, timeout=1, max_retries=1, max_retries_down=1)
    state = b.build()
    logs = LogOffload(tenant_targets=(tenant_target,), admin_targets=(admin_target,))
    proxy = await haproxy(state, logs=logs)
    assert f"log 127.0.0.1:{tenant_target.port} local0\n" in proxy.config
    assert f"log 127.0.0.1:{admin_target.port} local1 notice\n" in proxy.config

    async with client() as session:
        assert (await fetch(session, proxy.url(http_port, "/hello?x=1")))[0] == 200
        for _ in range(2):  # one of them may try the dead member first (redispatched)
            assert (await fetch(session, proxy.url(tcp_port, "/over-tcp")))[0] == 200

    lb = state.loadbalancer
    assert lb is not None
    http_line = await tenant.wait_for(r'"GET /hello\?x=1 HTTP/1.1"')
    assert _priority(http_line) == LOCAL0_INFO
    # {{ project_id }} {{ lb_id }} %f %ci %cp %t %{+Q}r %ST %B %U %[ssl_c_verify]
    # %{+Q}[ssl_c_s_dn] %b %s %Tt %tsc
    fields = re.search(
        rf"{lb.project_id} {lb.id} (\S+) 127\.0\.0\.1 \d+ \S+ "
        r'"GET /hello\?x=1 HTTP/1.1" 200 (\d+) (\d+) \S+ "[^"]*" (\S+) (\S+) \d+ (\S+)',
        http_line,
    )
    assert fields, http_line
    frontend, sent, received, backend, served_by, termination = fields.groups()
    (http_member,) = [m.id for m in state.members.values() if m.pool_id == http_pool_id]
    assert (frontend, backend) == (http_listener, f"{http_pool_id}:{http_listener}")
    assert served_by == http_member and int(sent) > 0 and int(received) > 0
    assert termination == "----"

    assert await tenant.wait_for(rf"{lb.project_id} {lb.id} {tcp_listener} ")
    tcp_line = await tenant.wait_for(rf" {tcp_pool}:{tcp_listener} {tcp_member} ")
    assert re.search(r" \d+ \S+ - - \d+ \d+ ", tcp_line), tcp_line

    down = await admin.wait_for(rf"Server {tcp_pool}:{tcp_listener}/{dead} is DOWN")
    assert _priority(down) // 8 == LOCAL1
    await tenant.wait_for(rf"Server {tcp_pool}:{tcp_listener}/{dead} is DOWN")
    for message in admin.messages:
        assert _priority(message) // 8 == LOCAL1 and _priority(message) % 8 <= 5, message
        assert "/hello" not in message


async def test_connection_logging_off_sends_no_access_log(
    members: Any,  # noqa: F811
    haproxy: Any,  # noqa: F811
    receivers: tuple[Receiver, LogTarget, Receiver, LogTarget],
) -> None:
    tenant, tenant_target, _, _ = receivers
    (server,) = await members(1)
    b = StateBuilder(VIP)
    port = free_port(VIP)
    http_pool(b, b.listener("HTTP", port), "ROUND_ROBIN", [server])
    logs = LogOffload(tenant_targets=(tenant_target,), connection_logging=False)
    proxy = await haproxy(b.build(), logs=logs)
    assert "\n    no log\n" in proxy.config and "log-format" not in proxy.config
    async with client() as session:
        for _ in range(3):
            assert (await fetch(session, proxy.url(port, "/quiet")))[0] == 200
    await asyncio.sleep(1.0)  # HAProxy sends each log line as the connection ends
    assert not [m for m in tenant.messages if "/quiet" in m or str(port) in m]


def test_ipv6_targets_and_a_custom_format_pass_haproxy_check(tmp_path: Path) -> None:
    b = StateBuilder(VIP)
    b.listener("HTTP", 8080)
    logs = LogOffload(
        tenant_targets=(LogTarget.parse("[::1]:5140"),),
        admin_targets=(LogTarget.parse("localhost:5141"),),
        user_log_format='{{ lb_id }} %ci "$HOME" #%ST',
    )
    (tmp_path / "servers-state").write_text("1\n")
    ctx = RenderContext(
        stats_socket=str(tmp_path / "s.sock"), state_dir=str(tmp_path), maxconn_cap=1000, logs=logs
    )
    config = render_haproxy(b.build(), ctx)
    assert "log udp6@[::1]:5140 local0" in config
    (tmp_path / "haproxy.cfg").write_text(config)
    check = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(tmp_path / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr + config
    assert "WARNING" not in check.stdout + check.stderr


@pytest.mark.parametrize("text", ["nohost", "host:", ":514", "h:x", "a b:5"])
def test_malformed_targets_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        LogTarget.parse(text)
