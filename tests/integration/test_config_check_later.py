"""A configuration stored for the next reload with its check deferred (``check_later``), against
a real HAProxy through the agent's data-plane adapter: the file is installed only once
`haproxy -c` passed, whatever needs it next waits for that check, and a refused file is never
the one a reload picks up. A configuration that nothing loads (no proxy) is not checked."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.amphora.adapters.haproxy import ConfigRejected, HaproxyDataPlane
from tests.integration.conftest import answer_once, free_loopback_port

pytestmark = pytest.mark.asyncio


def config(plane: HaproxyDataPlane, port: int, answer: str, balance: str = "roundrobin") -> str:
    return (
        f"global\n    stats socket {plane.stats_socket} mode 600 level admin\n"
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n"
        f"    timeout connect 1s\nfrontend f\n    bind 127.0.0.1:{port}\n"
        "    default_backend b\n"
        f"backend b\n    balance {balance}\n"
        f"    http-request return status 200 content-type text/plain string {answer}\n"
    )


async def installed(plane: HaproxyDataPlane, text: str, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while plane.config_text() != text:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_a_file_checked_later_is_installed_once_its_check_passed(
    plane: HaproxyDataPlane,
) -> None:
    port = free_loopback_port()
    first, second = config(plane, port, "one"), config(plane, port, "two")
    await plane.apply(first)

    await plane.apply(second, reload=False, check_later=True)

    assert await installed(plane, second)
    assert await answer_once(port) == "one"  # stored for the next reload, not loaded
    assert not plane.config_path.with_name("haproxy.cfg.unchecked").exists()


async def test_a_file_refused_later_is_never_installed_nor_loaded_by_a_reload(
    plane: HaproxyDataPlane,
) -> None:
    port = free_loopback_port()
    good = config(plane, port, "good")
    broken = config(plane, port, "broken", balance="no-such-algorithm")
    await plane.apply(good)

    await plane.apply(broken, reload=False, check_later=True)  # answered before the check
    failed = plane.config_path.with_name("haproxy.cfg.failed")
    deadline = time.monotonic() + 10
    while not failed.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)

    assert failed.read_text() == broken
    assert plane.config_text() == good
    # Any later reload of the serving HAProxy loads the installed file: the good one.
    await plane._reload()
    assert plane.is_running()
    assert await answer_once(port) == "good"
    # The next push without a reload hears of the refusal; one with a reload clears it.
    with pytest.raises(ConfigRejected) as rejected:
        await plane.apply(good, reload=False, check_later=True)
    assert "balance only supports" in str(rejected.value.detail)
    again = config(plane, port, "again")
    await plane.apply(again)
    assert await answer_once(port) == "again"
    await plane.apply(config(plane, port, "later"), reload=False, check_later=True)
    assert await installed(plane, config(plane, port, "later"))


async def test_a_reload_right_after_waits_for_the_check_and_loads_its_own_file(
    plane: HaproxyDataPlane,
) -> None:
    port = free_loopback_port()
    await plane.apply(config(plane, port, "one"))
    broken = config(plane, port, "broken", balance="no-such-algorithm")

    await plane.apply(broken, reload=False, check_later=True)
    await plane.apply(config(plane, port, "three"))  # at once: the check is still running

    assert plane.config_text() == config(plane, port, "three")
    assert await answer_once(port) == "three"
    assert plane.config_path.with_name("haproxy.cfg.failed").read_text() == broken


async def test_a_stop_installs_a_file_still_being_checked(plane: HaproxyDataPlane) -> None:
    port = free_loopback_port()
    await plane.apply(config(plane, port, "one"))
    second = config(plane, port, "two")

    await plane.apply(second, reload=False, check_later=True)
    await plane.stop()

    assert plane.config_text() == second


def idle(plane: HaproxyDataPlane, extra: str = "") -> str:
    """A config without a proxy (a load balancer without listeners): it runs no HAProxy."""
    return (
        f"global\n    stats socket {plane.stats_socket} mode 600 level admin\n{extra}"
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n"
        "    timeout connect 1s\n"
    )


async def test_a_first_config_without_a_proxy_is_installed_at_once(
    plane: HaproxyDataPlane,
) -> None:
    """Nothing loads it (HAProxy starts only with a proxy, from the file pushed then)."""
    loads: list[bool] = []
    plane.on_load(lambda: loads.append(True))

    await plane.apply(idle(plane), check_later=True)

    assert plane.config_text() == idle(plane)
    assert loads == [True]
    assert not plane.is_running()
    await plane.stop()
    assert plane.config_text() == idle(plane)


async def test_a_config_without_a_proxy_is_not_checked_and_a_start_checks_its_own(
    plane: HaproxyDataPlane,
) -> None:
    """`haproxy -c` runs for no file that nothing loads: a broken one is installed, no later
    push hears of it, and the start of the next file with a proxy checks that file whole."""
    await plane.apply(idle(plane, "    no-such-keyword 1\n"), check_later=True)
    broken = idle(plane, "    no-such-keyword 2\n")
    await plane.apply(broken, check_later=True)  # no check was under way, none refused
    await plane.stop()

    assert plane.config_text() == broken
    assert not plane.config_path.with_name("haproxy.cfg.failed").exists()
    port = free_loopback_port()
    with pytest.raises(ConfigRejected) as rejected:
        await plane.apply(config(plane, port, "up", balance="no-such-algorithm"))
    assert "balance only supports" in str(rejected.value.detail)
    assert plane.config_text() == broken
    await plane.apply(config(plane, port, "up"))
    assert await answer_once(port) == "up"


async def test_a_config_without_a_proxy_is_checked_at_once_while_haproxy_runs(
    plane: HaproxyDataPlane,
) -> None:
    """Installing it stops HAProxy: that is no change to leave for later."""
    port = free_loopback_port()
    await plane.apply(config(plane, port, "up"))

    with pytest.raises(ConfigRejected):
        await plane.apply(idle(plane, "    no-such-keyword 1\n"), check_later=True)

    assert plane.is_running()
    assert await answer_once(port) == "up"
