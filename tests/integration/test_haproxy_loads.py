"""HAProxy's starts and reloads through the agent's data-plane adapter, against a real HAProxy:
``apply`` returns once a worker of the new configuration answers (it may do so before the
master's CLI answers again), and loads that follow one another at once each find the master."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.amphora.adapters.daemon_process import parent_pid
from services.amphora.adapters.haproxy import HaproxyDataPlane
from services.amphora.adapters.haproxy_stats import unix_exchange
from tests.integration.conftest import answer_once, free_loopback_port

pytestmark = pytest.mark.asyncio


def config(plane: HaproxyDataPlane, ports: list[int], answer: str) -> str:
    frontends = "".join(
        f"frontend f{port}\n    bind 127.0.0.1:{port}\n"
        f"    http-request return status 200 content-type text/plain string {answer}\n"
        for port in ports
    )
    return (
        f"global\n    stats socket {plane.stats_socket} mode 600 level admin\n"
        "    httpclient.ssl.verify none\n"
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n"
        f"    timeout connect 1s\n{frontends}"
    )


async def serving_worker(plane: HaproxyDataPlane) -> int:
    info = await unix_exchange(plane.stats_socket, "show info")
    found = re.search(r"^Pid: (\d+)$", info, re.MULTILINE)
    assert found is not None, info
    return int(found.group(1))


async def test_a_start_returns_once_a_worker_serves_the_configuration(
    plane: HaproxyDataPlane,
) -> None:
    port = free_loopback_port()

    await plane.apply(config(plane, [port], "one"))

    assert await answer_once(port) == "one"
    assert parent_pid(await serving_worker(plane)) == (await plane.process_table(10)).master_pid


async def test_a_reload_returns_once_a_new_worker_serves_the_new_configuration(
    plane: HaproxyDataPlane,
) -> None:
    first, added = free_loopback_port(), free_loopback_port()
    await plane.apply(config(plane, [first], "one"))
    before = await plane.process_table(10)
    old_worker = await serving_worker(plane)

    await plane.apply(config(plane, [first, added], "two"))

    assert await answer_once(added) == "two"
    assert await answer_once(first) == "two"
    new_worker = await serving_worker(plane)
    assert new_worker != old_worker
    assert new_worker not in before.workers
    after = await plane.process_table(10)  # the master's CLI answers again, counters moved
    assert after.reloads == before.reloads + 1
    assert after.failed_reloads == 0
    assert new_worker in after.workers


async def test_loads_back_to_back_each_serve_their_configuration(
    plane: HaproxyDataPlane,
) -> None:
    port = free_loopback_port()
    await plane.apply(config(plane, [port], "zero"))
    for generation in ("one", "two", "three"):
        await plane.apply(config(plane, [port], generation))
        assert await answer_once(port) == generation
    assert (await plane.process_table(10)).reloads == 3


async def test_haproxy_serves_from_a_deep_state_dir_with_a_long_tmpdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HAProxy binds no unix socket path over 97 bytes: a deep state dir gets a short socket
    dir, and a $TMPDIR too long for one gives way to /tmp."""
    long_tmp = tmp_path / ("t" * 90)
    long_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    deep = HaproxyDataPlane(
        Path("/usr/sbin/haproxy"), tmp_path / ("d" * 100), reload_timeout=10, drain_timeout=1
    )
    await deep.prepare()
    try:
        port = free_loopback_port()

        await deep.apply(config(deep, [port], "deep"))

        assert deep.stats_socket.parent.parent == Path("/tmp")
        assert await answer_once(port) == "deep"
        assert parent_pid(await serving_worker(deep)) == (await deep.process_table(10)).master_pid
    finally:
        await deep.stop()
    assert not deep.stats_socket.parent.exists()
