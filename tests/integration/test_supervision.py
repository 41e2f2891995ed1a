"""supervisord as ``fulcrum up`` drives it: restarts counted, backoff, a loud give-up.

A real supervisord runs two programs: one that lives until killed, one that crashes at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from supervisor.datatypes import dict_of_key_value_pairs

from deploy.local.supervision import (
    Program,
    SupervisorClient,
    SupervisorUnreachable,
    read_restarts,
    render_config,
)


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[SupervisorClient, Path]]:
    sleeper = Program(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(600)"],
        tmp_path / "sleeper.log",
        environment={"ODD_VALUE": 'a,b=c %d ["x"]'},
    )
    crasher = Program(
        "crasher",
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        tmp_path / "crasher.log",
        startretries=2,
    )
    conf = tmp_path / "supervisord.conf"
    socket_path = str(tmp_path / "s.sock")
    conf.write_text(
        render_config(
            socket_path=socket_path,
            pid_file=tmp_path / "supervisord.pid",
            log_file=tmp_path / "supervisord.log",
            programs=[sleeper, crasher],
            restarts_file=tmp_path / "restarts.json",
            listener_log=tmp_path / "restarts.log",
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield SupervisorClient(socket_path), tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_environment_values_survive_supervisord_parsing() -> None:
    values = {"A": '["127.0.0.1:5555"]', "B": "x,y=z", "C": "100%", "D": "postgresql://p@h:1/d"}
    program = Program("p", ["true"], Path("/tmp/p.log"), environment=values)
    config = render_config(
        socket_path="/tmp/s.sock",
        pid_file=Path("/tmp/p.pid"),
        log_file=Path("/tmp/l.log"),
        programs=[program],
        restarts_file=Path("/tmp/r.json"),
        listener_log=Path("/tmp/r.log"),
    )
    line = next(x for x in config.splitlines() if x.startswith("environment="))
    # supervisord reads its file with %-interpolation, then parses the pairs.
    parsed = dict_of_key_value_pairs(line.removeprefix("environment=").replace("%%", "%"))
    assert parsed == values


def test_a_value_with_a_quote_is_refused() -> None:
    with pytest.raises(ValueError, match="quote"):
        render_config(
            socket_path="/tmp/s.sock",
            pid_file=Path("/tmp/p.pid"),
            log_file=Path("/tmp/l.log"),
            programs=[Program("p", ["true"], Path("/tmp/p.log"), environment={"A": "it's"})],
            restarts_file=Path("/tmp/r.json"),
            listener_log=Path("/tmp/r.log"),
        )


def test_crashes_are_restarted_counted_and_a_crash_loop_given_up(
    supervised: tuple[SupervisorClient, Path],
) -> None:
    client, state = supervised
    eventually(lambda: _state(client, "sleeper") == "RUNNING")
    first = _pid(client, "sleeper")
    assert first is not None
    env = Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
    assert b'ODD_VALUE=a,b=c %d ["x"]' in env

    os.kill(first, signal.SIGKILL)
    eventually(lambda: _pid(client, "sleeper") not in (None, first))
    eventually(
        lambda: read_restarts(state / "restarts.json").get("sleeper", {}).get("restarts") == 1
    )
    assert read_restarts(state / "restarts.json")["sleeper"]["crashes"] == 1

    # The crasher dies at once every time: backoff, then FATAL, said loudly.
    eventually(lambda: _state(client, "crasher") == "FATAL")
    eventually(lambda: read_restarts(state / "restarts.json")["crasher"]["fatal"] is True)
    counts = read_restarts(state / "restarts.json")["crasher"]
    assert counts["fatal"] is True and counts["restarts"] == 2
    eventually(lambda: "GAVE UP on crasher" in (state / "restarts.log").read_text())
    assert "sleeper (pid" in (state / "restarts.log").read_text()


def test_an_absent_supervisor_is_reported_as_unreachable(tmp_path: Path) -> None:
    with pytest.raises(SupervisorUnreachable):
        SupervisorClient(str(tmp_path / "none.sock"), timeout=1).processes()


def _state(client: SupervisorClient, name: str) -> str:
    try:
        return next(p.state for p in client.processes() if p.name == name)
    except SupervisorUnreachable:
        return "not yet"


def _pid(client: SupervisorClient, name: str) -> int | None:
    return next(p.pid for p in client.processes() if p.name == name)
