"""The rendered etcd and Patroni configurations: loopback only, synchronous, passwords kept."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from deploy.local.patroni import PatroniCluster, PatroniPorts
from deploy.local.postgres_roles import _on_host
from deploy.local.supervision import Program

PORTS = PatroniPorts(etcd_client=2379, etcd_peer=2380, postgres=(5433, 5434), restapi=(8008, 8009))


def _cluster(tmp_path: Path) -> PatroniCluster:
    return PatroniCluster(tmp_path / "pg", PORTS, bin_dir=Path("/opt/pg/bin"))


def test_members_get_their_own_ports_and_share_one_synchronous_dcs(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    configs = [cluster.patroni_config(name) for name in cluster.member_names]

    assert cluster.member_names == ["pg0", "pg1"]
    assert [c["postgresql"]["listen"] for c in configs] == ["127.0.0.1:5433", "127.0.0.1:5434"]
    assert [c["restapi"]["listen"] for c in configs] == ["127.0.0.1:8008", "127.0.0.1:8009"]
    for config in configs:
        assert config["etcd3"]["hosts"] == ["127.0.0.1:2379"]
        assert config["postgresql"]["bin_dir"] == "/opt/pg/bin"
        dcs = config["bootstrap"]["dcs"]
        assert dcs["synchronous_mode"] is True
        assert dcs["primary_start_timeout"] == 0  # a crashed primary is failed over
        assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
        assert dcs["postgresql"]["use_pg_rewind"] is True
        # Every TCP login, replication included, needs a password; nothing beyond loopback.
        for line in config["postgresql"]["pg_hba"]:
            assert line.split()[-2:] == ["127.0.0.1/32", "scram-sha-256"]
        assert config["postgresql"]["parameters"]["unix_socket_directories"] == ""


def test_etcd_listens_on_loopback_with_the_json_gateway(tmp_path: Path) -> None:
    config = _cluster(tmp_path).etcd_config()

    assert config["listen-client-urls"] == "http://127.0.0.1:2379"
    assert config["listen-peer-urls"] == "http://127.0.0.1:2380"
    assert config["initial-cluster"] == "etcd0=http://127.0.0.1:2380"
    assert config["enable-grpc-gateway"] is True


def test_dsn_lists_every_member_and_asks_for_the_primary(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    password = cluster.superuser_password

    assert cluster.dsn == (
        f"postgresql://postgres:{password}@127.0.0.1:5433,127.0.0.1:5434/fulcrum"
        "?target_session_attrs=read-write"
    )


def test_render_writes_private_files_and_keeps_passwords(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    cluster.render()
    first = yaml.safe_load((cluster.member_dir("pg0") / "patroni.yaml").read_text())

    _cluster(tmp_path).render()
    again = yaml.safe_load((cluster.member_dir("pg0") / "patroni.yaml").read_text())

    assert first["postgresql"]["authentication"] == again["postgresql"]["authentication"]
    secrets = [
        first["postgresql"]["authentication"]["superuser"]["password"],
        first["postgresql"]["authentication"]["replication"]["password"],
        first["restapi"]["authentication"]["password"],
    ]
    assert len(set(secrets)) == 3 and all(len(s) >= 32 for s in secrets)
    for path in [
        cluster.state_dir / "etcd.yaml",
        cluster.member_dir("pg0") / "patroni.yaml",
        cluster.member_dir("pg1") / "patroni.yaml",
        *cluster.state_dir.glob("*.password"),
    ]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_programs_supervise_etcd_before_the_members(tmp_path: Path) -> None:
    programs = _cluster(tmp_path).programs(prefix="db-")

    assert [p.name for p in programs] == ["db-etcd", "db-pg0", "db-pg1"]
    assert all(isinstance(p, Program) for p in programs)
    etcd, *members = programs
    assert all(etcd.priority < m.priority for m in members)
    assert etcd.command[-2:] == ["--config-file", str(tmp_path / "pg" / "etcd.yaml")]
    assert members[0].command[-1] == str(tmp_path / "pg" / "pg0" / "patroni.yaml")


def test_the_owner_migrates_on_the_host_the_superuser_reached() -> None:
    """A multi-host DSN pinned to the primary that provisioning reached (a standby that has
    not replayed the new login yet would refuse the owner's password)."""
    multi = "postgresql://o:pw@pg0:5432,pg1:5432/postgres?target_session_attrs=read-write"
    assert _on_host(multi, "198.18.3.7", 5432) == (
        "postgresql://o:pw@198.18.3.7:5432/postgres?target_session_attrs=read-write"
    )
    assert _on_host("postgresql://pg0/db", "fd00::5", 6432) == "postgresql://[fd00::5]:6432/db"
