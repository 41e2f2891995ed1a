"""Stand-in for ``deploy/local/patroni.py`` (lane-patroni) until it lands: one embedded
Postgres behind the same interface (``programs``, ``dsn``, ``member_dsn``, ``wait_ready``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.embedded import EmbeddedPostgres
from deploy.local.ports import LOOPBACK, free_tcp_port
from deploy.local.supervision import Program


@dataclass(frozen=True)
class PatroniPorts:
    postgres: list[int]
    restapi: list[int] = field(default_factory=list)
    etcd_client: int = 0

    @classmethod
    def pick(cls, members: int = 2) -> PatroniPorts:
        return cls(postgres=[free_tcp_port()])


class PatroniCluster:
    """One member ``pg0``, no etcd."""

    def __init__(self, state_dir: Path, ports: PatroniPorts | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.ports = ports if ports is not None else PatroniPorts.pick()
        self.log_dir = self.state_dir / "logs"
        self._pg = EmbeddedPostgres(self.state_dir / "pg0", port=self.ports.postgres[0])

    @property
    def etcd_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.etcd_client}"

    @property
    def dsn(self) -> str:
        return f"{self.member_dsn('pg0')}?target_session_attrs=read-write"

    def member_dsn(self, name: str, database: str | None = None) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.ports.postgres[0]}/postgres"

    def programs(self, prefix: str = "") -> list[Program]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return [
            Program(
                f"{prefix}pg0",
                self._pg.supervised_command(),
                self.log_dir / "pg0.log",
                priority=20,
                stop_signal="INT",
                stop_wait=30,
                environment={"LC_ALL": "C"},
            )
        ]

    def wait_ready(self, timeout: float = 60.0) -> None:
        return None
