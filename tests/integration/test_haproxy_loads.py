"""HAProxy's starts and reloads through the agent's data-plane adapter, against a real HAProxy:
one process per amphora, no master; ``apply`` returns once the new process answers on the
stats socket; a reload's process takes the listeners over and retires the serving one without
a refused or reset connection, new or kept alive; a refused reload leaves the serving process
as it was; a stop ends the retiring processes too."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import pytest

from services.amphora.adapters.daemon_process import parent_pid, pid_alive
from services.amphora.adapters.haproxy import ConfigRejected, HaproxyDataPlane
from services.amphora.adapters.haproxy_stats import unix_exchange
from tests.integration.conftest import answer_once, free_loopback_port, gone_within

pytestmark = pytest.mark.asyncio

HAPROXY = Path("/usr/sbin/haproxy")


def config(plane: HaproxyDataPlane, ports: list[int], answer: str) -> str:
    frontends = "".join(
        f"frontend f{port}\n    bind 127.0.0.1:{port}\n"
        f"    http-request return status 200 content-type text/plain string {answer}\n"
        for port in ports
    )
    return (
        f"global\n    stats socket {plane.stats_socket} mode 600 level admin expose-fd listeners\n"
        "    httpclient.ssl.verify none\n    hard-stop-after 10s\n"
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n"
        f"    timeout connect 1s\n    option idle-close-on-response\n{frontends}"
    )


async def serving_worker(plane: HaproxyDataPlane) -> int:
    info = await unix_exchange(plane.stats_socket, "show info")
    found = re.search(r"^Pid: (\d+)$", info, re.MULTILINE)
    assert found is not None, info
    return int(found.group(1))


async def master_settled(master_socket: Path, patience: float = 10.0) -> None:
    """Wait until a master-worker HAProxy's master lists a worker on its CLI. The master
    re-executes itself once its worker runs, and a signal that reaches it meanwhile is lost
    (a retiring reload's ``-sf`` then leaves it running): its CLI answers only after that."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(str(master_socket))
            try:
                writer.write(b"show proc\n")
                answer = await asyncio.wait_for(reader.readuntil(b"# programs"), 0.5)
            finally:
                writer.close()
            if b"worker" in answer:
                return
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        assert asyncio.get_running_loop().time() < deadline, "the master never settled"
        await asyncio.sleep(0.01)


def process_state(pid: int) -> str:
    """A process's state and signal masks, and its children's (for a failure's message)."""
    lines = []
    for task in [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]:
        status = Path(f"/proc/{task}/status").read_text().splitlines()
        wanted = ("Name", "State", "SigBlk", "SigIgn", "SigCgt", "SigPnd", "ShdPnd")
        lines.append(f"{task}: " + ", ".join(x for x in status if x.startswith(wanted)))
    return "\n".join(lines)


def pid_file(plane: HaproxyDataPlane) -> int:
    return int((plane.state_dir / "haproxy.pid").read_text())


async def test_a_start_returns_once_its_process_serves_the_configuration(
    plane: HaproxyDataPlane,
) -> None:
    port = free_loopback_port()

    await plane.apply(config(plane, [port], "one"))

    assert await answer_once(port) == "one"
    pid = await serving_worker(plane)
    assert parent_pid(pid) == os.getpid()  # no master between the agent and HAProxy
    assert pid_file(plane) == pid == await plane.serving_pid(1)


async def test_a_reload_returns_once_a_new_process_serves_and_the_old_one_leaves(
    plane: HaproxyDataPlane,
) -> None:
    first, added = free_loopback_port(), free_loopback_port()
    await plane.apply(config(plane, [first], "one"))
    old = await serving_worker(plane)

    await plane.apply(config(plane, [first, added], "two"))

    assert await answer_once(added) == "two"
    assert await answer_once(first) == "two"
    new = await serving_worker(plane)
    assert new != old and pid_file(plane) == new
    assert await gone_within(old, 5)


async def test_loads_back_to_back_each_serve_their_configuration(
    plane: HaproxyDataPlane,
) -> None:
    port = free_loopback_port()
    await plane.apply(config(plane, [port], "zero"))
    pids = [await serving_worker(plane)]
    for generation in ("one", "two", "three"):
        await plane.apply(config(plane, [port], generation))
        assert await answer_once(port) == generation
        pids.append(await serving_worker(plane))
    assert len(set(pids)) == 4
    for retired in pids[:-1]:
        assert await gone_within(retired, 5)


async def test_a_reload_without_the_listeners_handed_over_says_so(
    plane: HaproxyDataPlane, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_loopback_port()
    handing_over = config(plane, [port], "one")
    await plane.apply(handing_over)
    with caplog.at_level("WARNING", logger="services.amphora.adapters.haproxy"):
        await plane.apply(handing_over.replace(" expose-fd listeners", ""))  # handed over
        assert "without handing its listeners over" not in caplog.text
        await plane.apply(config(plane, [port], "three"))  # the serving one exposes none

    assert "without handing its listeners over" in caplog.text
    assert await answer_once(port) == "three"


async def test_a_refused_reload_leaves_the_serving_process_as_it_was(
    plane: HaproxyDataPlane,
) -> None:
    port = free_loopback_port()
    await plane.apply(config(plane, [port], "good"))
    serving = await serving_worker(plane)

    with pytest.raises(ConfigRejected) as refused:
        await plane.apply(config(plane, [port], "good") + "    no-such-keyword\n")

    assert "no-such-keyword" in str(refused.value.detail)
    assert await serving_worker(plane) == serving == pid_file(plane)
    assert await answer_once(port) == "good"


# wrk's summary lines that count failed requests.
_WRK_FAILURES = re.compile(r"^\s*(Socket errors: .*|Non-2xx or 3xx responses: \d+)$", re.MULTILINE)
_WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)


@pytest.mark.parametrize("keep_alive", [False, True], ids=["new-connections", "keep-alive"])
async def test_reloads_under_load_refuse_and_reset_nothing(
    plane: HaproxyDataPlane, keep_alive: bool
) -> None:
    """wrk (32 connections) requests without pause while the configuration is reloaded 12
    times, 0.2 s apart: every request is answered. New connections need the listeners handed
    over (-x): a listener each would reset what waits in the retiring one's accept queue.
    Kept-alive ones need the retiring process to close an idle connection only after one more
    answer (`option idle-close-on-response`)."""
    port = free_loopback_port()
    await plane.apply(config(plane, [port], "g0"))
    close = [] if keep_alive else ["-H", "Connection: close"]
    wrk = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        "-c32",
        "-d60s",  # ended by SIGINT once the reloads are done (wrk then prints its summary)
        *close,
        f"http://127.0.0.1:{port}/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await asyncio.sleep(0.25)
        for generation in range(1, 13):
            assert wrk.returncode is None, "wrk ended before the reloads did"
            await plane.apply(config(plane, [port], f"g{generation}"))
            await asyncio.sleep(0.2)
        wrk.send_signal(signal.SIGINT)
        output = (await asyncio.wait_for(wrk.communicate(), 20))[0].decode()
    finally:
        if wrk.returncode is None:
            wrk.kill()
            await wrk.wait()
    requests = _WRK_REQUESTS.search(output)
    assert requests is not None and int(requests.group(1)) > 100, output
    assert _WRK_FAILURES.findall(output) == [], output


async def test_a_stop_ends_the_processes_a_reload_retired(plane: HaproxyDataPlane) -> None:
    """A retiring process lingers while a kept-alive connection idles on it (up to
    hard-stop-after); stopping HAProxy ends it too."""
    port = free_loopback_port()
    await plane.apply(config(plane, [port], "one"))
    old = await serving_worker(plane)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"one")
        await plane.apply(config(plane, [port], "two"))
        assert pid_alive(old)  # held by the idle connection

        await plane.stop()

        assert not pid_alive(old)
        assert not (plane.state_dir / "haproxy.pid").exists()
    finally:
        writer.close()


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
        assert await serving_worker(deep) == pid_file(deep)
    finally:
        await deep.stop()
    assert not deep.stats_socket.parent.exists()


async def test_a_reload_keeps_the_servers_states(plane: HaproxyDataPlane) -> None:
    """The servers' states are saved before a reload (`show servers state` into the config's
    `server-state-file`) and the new process loads them, as Octavia's amphora does: a state
    the runtime API set (here a drain) outlives a reload of a file that does not say it."""
    port, member = free_loopback_port(), free_loopback_port()
    state_file = plane.state_dir / "servers-state"

    def with_pool(generation: int) -> str:
        text = config(plane, [port], f"g{generation}")
        text = text.replace(
            "    hard-stop-after 10s\n",
            f"    hard-stop-after 10s\n    server-state-file {state_file}\n",
        ).replace(
            "    option idle-close-on-response\n",
            "    option idle-close-on-response\n    load-server-state-from-file global\n",
        )
        return text + f"backend pool\n    server s1 127.0.0.1:{member}\n"

    async def status() -> str:
        rows = await plane.show_stat({"pxname", "svname", "status"})
        return next(str(r["status"]) for r in rows if r.get("svname") == "s1")

    await plane.apply(with_pool(0))
    await unix_exchange(plane.stats_socket, "set server pool/s1 state drain")
    assert await status() == "DRAIN"

    await plane.apply(with_pool(1))

    assert await answer_once(port) == "g1"
    assert await status() == "DRAIN"
    assert "s1" in state_file.read_text()


@pytest.mark.parametrize("master_worker", [False, True], ids=["own", "master-worker"])
async def test_a_haproxy_left_running_is_adopted_and_retired_by_the_next_reload(
    tmp_path: Path, master_worker: bool
) -> None:
    """A new agent process adopts the HAProxy its predecessor left serving (the pid file names
    it), also one an agent of the master-worker days left (the pid file names the master):
    the next reload hands the listeners over from it and retires it, and nothing stops
    serving on the way."""
    state = tmp_path / "amp"
    first = HaproxyDataPlane(HAPROXY, state, reload_timeout=10, drain_timeout=1)
    await first.prepare()
    port = free_loopback_port()
    (state / "haproxy.cfg").write_text(config(first, [port], "left"))
    mode = ["-W", "-S", str(state / "master.sock")] if master_worker else []
    adopting = HaproxyDataPlane(HAPROXY, state, reload_timeout=10, drain_timeout=1)
    left = await asyncio.create_subprocess_exec(  # as the previous agent started it
        str(HAPROXY),
        *mode,
        "-db",
        "-f",
        str(state / "haproxy.cfg"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        (state / "haproxy.pid").write_text(f"{left.pid}\n")
        assert await first.serving_pid(10)
        if master_worker:
            await master_settled(state / "master.sock")
        assert await answer_once(port) == "left"

        await adopting.prepare()
        assert adopting.is_running()
        await adopting.apply(config(adopting, [port], "next"))

        assert await answer_once(port) == "next"
        # Retired, not killed: it leaves once idle, at the latest by hard-stop-after (10 s).
        try:
            await asyncio.wait_for(left.wait(), 15)
        except TimeoutError:
            pytest.fail(f"the adopted HAProxy still runs after 15 s: {process_state(left.pid)}")
        assert pid_file(adopting) == await serving_worker(adopting) != left.pid
    finally:
        await adopting.stop()
        if left.returncode is None:
            left.kill()
            await left.wait()
