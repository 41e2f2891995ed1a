"""A real service process honours FULCRUM_<SVC>_LOG_LEVEL and writes the shared format.

Housekeeping is started against a Postgres nobody serves (127.0.0.1:1): it fails at start,
after logging has been set up, which is all a format and level check needs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

# <date> <time,ms> <LEVEL> <service> <logger> <message>
LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+) "
)


def housekeeping_stderr(level: str) -> str:
    env = {
        **os.environ,
        "FULCRUM_HOUSEKEEPING_LOG_LEVEL": level,
        "FULCRUM_HOUSEKEEPING_POSTGRES__DSN": "postgresql://postgres@127.0.0.1:1/postgres",
        "FULCRUM_HOUSEKEEPING_NATS__URL": "nats://127.0.0.1:1",
        "FULCRUM_HOUSEKEEPING_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.housekeeping"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0  # no Postgres: it must not start
    return done.stderr


def log_lines(stderr: str) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in map(LINE.match, stderr.splitlines()) if m]


def test_debug_lines_carry_the_service_and_warning_drops_them() -> None:
    verbose = log_lines(housekeeping_stderr("debug"))
    assert ("DEBUG", "housekeeping") in verbose  # the event loop's line at least
    assert all(service == "housekeeping" for _, service in verbose)

    quiet = log_lines(housekeeping_stderr("WARNING"))
    assert not [level for level, _ in quiet if level in ("DEBUG", "INFO")]


def test_a_bad_level_is_refused_naming_the_setting() -> None:
    stderr = housekeeping_stderr("loud")
    assert "refusing to start" in stderr
    assert "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in stderr
