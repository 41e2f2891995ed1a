"""``fulcrum status``: each part of a local stack (the embedded default or the cluster) as
supervisord, the parts' readiness probes and Postgres see it.

A part is ready when supervisord runs it and its probe (from the stack's ``layout.json``)
answers: ``/readyz`` of each service replica, the HAProxy front, each NATS node's monitor with
JetStream enabled, a Postgres connection. ``fulcrum up`` waits on the same probes
(``collect_status``) before it says the stack is up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncpg

from deploy.local.state import Part, StackError, StackLayout, StackPaths
from deploy.local.supervision import SupervisorClient, SupervisorUnreachable, read_restarts

# What asyncpg raises when Postgres does not answer, or (a multi-host DSN) no host is the
# primary yet.
_UNREACHABLE: Final = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    TimeoutError,
)

# How long a client command waits for an answer before it says the server is unreachable.
CONNECT_TIMEOUT: Final = 3.0


@dataclass
class PartStatus:
    """One supervised part: a service, Postgres or NATS."""

    name: str
    state: str
    pid: int | None
    uptime: float
    restarts: int
    crashes: int
    ready: bool
    detail: str = ""


@dataclass
class StackStatus:
    """Everything ``fulcrum status`` shows; ``ready`` only when every part is ready."""

    state_dir: str
    supervisor_pid: int | None
    ports: dict[str, int]
    kind: str = "single"
    addresses: list[str] = field(default_factory=list)
    parts: list[PartStatus] = field(default_factory=list)
    outbox_backlog: int | None = None
    outbox_oldest_seconds: float | None = None
    amphorae: dict[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return bool(self.parts) and all(part.ready for part in self.parts)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ready": self.ready}


def _http_ready(url: str, timeout: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status == 200, f"{url}: {resp.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        return False, f"{url}: {exc.code} {body}"
    except OSError as exc:
        return False, f"{url}: {exc}"


async def _database_facts(
    dsn: str, connect_timeout: float
) -> tuple[int, float | None, dict[str, int]] | None:
    """Outbox backlog, age of its oldest row and amphorae by state; None before the services
    created the tables. Raises what asyncpg raises when Postgres does not answer."""
    conn = await asyncpg.connect(dsn, timeout=connect_timeout, command_timeout=connect_timeout)
    try:
        backlog = await conn.fetchval("SELECT count(*) FROM outbox")
        oldest = await conn.fetchval(
            "SELECT extract(epoch FROM now() - min(e.recorded_at))::float8 "
            "FROM outbox o JOIN events e ON e.event_id = o.event_id"
        )
        rows = await conn.fetch("SELECT status, count(*) AS n FROM amphora_view GROUP BY status")
        return int(backlog), oldest, {row["status"]: int(row["n"]) for row in rows}
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()


async def _postgres_ready(dsn: str, connect_timeout: float) -> tuple[bool, str]:
    try:
        conn = await asyncpg.connect(dsn, timeout=connect_timeout, command_timeout=connect_timeout)
    except _UNREACHABLE as exc:
        return False, f"{dsn}: {exc!r}"
    await conn.close()
    return True, dsn


def _probe(part: Part, timeout: float) -> tuple[bool, str]:
    if part.probe.startswith("postgresql://"):
        return asyncio.run(_postgres_ready(part.probe, timeout))
    return _http_ready(part.probe, timeout)


def collect_status(paths: StackPaths, timeout: float = CONNECT_TIMEOUT) -> StackStatus:
    """Ask supervisord, every part's probe and Postgres.

    Raises StackError when no stack answers under ``paths``.
    """
    layout = StackLayout.load(paths.layout)
    try:
        ports = json.loads(paths.ports.read_text())
    except (OSError, ValueError) as exc:
        raise StackError(f"no stack under {paths.state} ({paths.ports} unreadable)") from exc
    client = SupervisorClient(paths.supervisor_socket, timeout)
    try:
        processes = {info.name: info for info in client.processes()}
        supervisor_pid: int | None = client.pid()
    except SupervisorUnreachable as exc:
        raise StackError(f"no stack running under {paths.state} ({exc})") from exc
    counts = read_restarts(paths.restarts)
    status = StackStatus(
        str(paths.state), supervisor_pid, ports, layout.kind, list(layout.addresses)
    )
    try:
        facts = asyncio.run(_database_facts(layout.database_dsn, timeout))
    except _UNREACHABLE:
        pass
    else:
        if facts is not None:
            status.outbox_backlog, status.outbox_oldest_seconds, status.amphorae = facts
    for part in layout.parts:
        info = processes.get(part.name)
        running = info is not None and info.running
        ok, detail = _probe(part, timeout) if running else (False, "not running")
        count = counts.get(part.name, {})
        status.parts.append(
            PartStatus(
                name=part.name,
                state=info.state if info else "MISSING",
                pid=info.pid if info else None,
                uptime=info.uptime if info else 0.0,
                restarts=int(count.get("restarts", 0)),
                crashes=int(count.get("crashes", 0)),
                ready=running and ok,
                detail=detail if not (running and ok) else "",
            )
        )
    return status


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def render_status(status: StackStatus) -> str:
    """The human-readable table of ``fulcrum status``."""
    lines = [
        f"Fulcrum {'cluster ' if status.kind == 'cluster' else ''}stack in "
        f"{status.state_dir}: {'READY' if status.ready else 'NOT READY'}",
        f"  supervisor pid {status.supervisor_pid}",
        f"  {'part':<16}{'state':<10}{'pid':>8}  {'uptime':>8}  {'restarts':>8}  ready",
    ]
    for part in status.parts:
        lines.append(
            f"  {part.name:<16}{part.state:<10}{part.pid or '-':>8}  "
            f"{_duration(part.uptime):>8}  {part.restarts:>8}  "
            f"{'yes' if part.ready else 'NO  ' + part.detail}"
        )
    if status.outbox_backlog is None:
        lines.append("  outbox: unknown (Postgres did not answer)")
    else:
        oldest = status.outbox_oldest_seconds
        age = f", oldest {oldest:.1f} s" if oldest is not None else ""
        lines.append(f"  outbox backlog: {status.outbox_backlog} events{age}")
    amphorae = ", ".join(f"{k} {v}" for k, v in sorted(status.amphorae.items())) or "none"
    lines.append(f"  amphorae: {amphorae}")
    lines += [f"  {line}" for line in status.addresses]
    return "\n".join(lines) + "\n"


def run_status(state_dir: str, as_json: bool = False) -> int:
    """``fulcrum status``: 0 when every part is ready, 1 when not, 2 when no stack answers."""
    paths = StackPaths(Path(state_dir).resolve())
    try:
        status = collect_status(paths)
    except StackError as exc:
        print(f"fulcrum status: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(status.as_json(), indent=1))
    else:
        sys.stdout.write(render_status(status))
    return 0 if status.ready else 1
