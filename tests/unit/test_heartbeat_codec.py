"""The heartbeat wire format (round trip, tampering, bounds) and the sender's message builder."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest

from libs.common import heartbeat_codec as codec
from libs.common.errors import ConfigurationError
from services.amphora.adapters.haproxy import parse_show_stat
from services.amphora.adapters.haproxy_stats import ProcessCpu, process_cpu_seconds
from services.amphora.heartbeat import (
    STAT_COLUMNS,
    HeartbeatConfig,
    HeartbeatSender,
    build_message,
    parse_endpoint,
)
from services.amphora.settings import AmphoraSettings

KEY = b"s3cret-heartbeat-key"
LISTENER = "6f1c1bde-2d5e-4b7a-9c41-0a3c5d9e7f10"
POOL = "0b7e5c52-8f0e-4a4c-b6f3-5c7d2e9a1b22"
MEMBER_A = "4c2a7d1e-3b5f-4e6a-8d9c-1f0e2d3c4b5a"
MEMBER_B = "9e8d7c6b-5a4f-4e3d-2c1b-0a9f8e7d6c5b"


def message(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "amp-1",
        "seq": 7,
        "ver": 3,
        "listeners": {
            LISTENER: {
                "status": "OPEN",
                "stats": {"rx": 10, "tx": 20, "conns": 3, "totconns": 4, "ereq": 1},
            }
        },
        "pools": {f"{POOL}:{LISTENER}": {"status": "UP", "members": {MEMBER_A: "UP"}}},
    }
    return body | overrides


def signed(body: bytes, key: bytes = KEY) -> bytes:
    return body + hmac.new(key, body, hashlib.sha256).hexdigest().encode()


@pytest.mark.parametrize("key", [b"", b"k", b"x" * 64, b"y" * 65, os.urandom(200)])
def test_the_signer_signs_as_hmac_sha256_does(key: bytes) -> None:
    signer = codec.Signer(key)
    for body in (b"", b"a", os.urandom(333), os.urandom(5000)):
        assert signer.sign(body) == hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        assert signer.sign(body) == codec.sign(body, key)


def test_round_trip_keeps_every_field() -> None:
    decoded = codec.decode(codec.encode(message(), KEY), KEY)
    assert decoded.id == "amp-1" and decoded.seq == 7 and decoded.ver == 3
    assert decoded.listeners[LISTENER].status == "OPEN"
    assert decoded.listeners[LISTENER].stats.model_dump() == {
        "rx": 10,
        "tx": 20,
        "conns": 3,
        "totconns": 4,
        "ereq": 1,
    }
    assert decoded.pools[f"{POOL}:{LISTENER}"].members == {MEMBER_A: "UP"}


def test_wire_format_is_zlib_json_then_hex_hmac_of_the_compressed_bytes() -> None:
    datagram = codec.encode(message(), KEY)
    body, mac = datagram[:-64], datagram[-64:]
    assert mac == hmac.new(KEY, body, hashlib.sha256).hexdigest().encode()
    assert json.loads(zlib.decompress(body)) == message()


def test_an_empty_heartbeat_is_valid() -> None:
    decoded = codec.decode(codec.encode(message(listeners={}, pools={}), KEY), KEY)
    assert decoded.listeners == {} and decoded.pools == {}


@pytest.mark.parametrize("position", [0, 5, -70, -1])
def test_any_flipped_byte_is_a_bad_signature(position: int) -> None:
    datagram = bytearray(codec.encode(message(), KEY))
    datagram[position] ^= 0x01
    with pytest.raises(codec.BadSignature):
        codec.decode(bytes(datagram), KEY)


def test_another_key_is_a_bad_signature() -> None:
    with pytest.raises(codec.BadSignature):
        codec.decode(codec.encode(message(), b"other key"), KEY)


def test_uppercase_hex_or_raw_digest_is_refused() -> None:
    body = zlib.compress(json.dumps(message()).encode())
    upper = body + hmac.new(KEY, body, hashlib.sha256).hexdigest().upper().encode()
    raw = body + hmac.new(KEY, body, hashlib.sha256).digest()
    for datagram in (upper, raw):
        with pytest.raises(codec.BadSignature):
            codec.decode(datagram, KEY)


@pytest.mark.parametrize("datagram", [b"", b"x", b"0" * 64])
def test_too_short_for_a_mac(datagram: bytes) -> None:
    with pytest.raises(codec.BadSignature):
        codec.decode(datagram, KEY)


@pytest.mark.parametrize(
    "body",
    [
        b"not zlib at all",
        zlib.compress(b"{not json"),
        zlib.compress(b"[1, 2, 3]"),
        zlib.compress(json.dumps({"id": "a", "ver": 3}).encode()),  # no seq
        zlib.compress(json.dumps(message(seq=-1)).encode()),
        zlib.compress(json.dumps(message(ver=2)).encode()),
        zlib.compress(json.dumps(message(listeners={"l": {"stats": {}}})).encode()),
        zlib.compress(json.dumps(message()).encode())[:-3],  # truncated stream
    ],
    ids=["not-zlib", "not-json", "list", "no-seq", "negative-seq", "v2", "no-status", "cut"],
)
def test_signed_garbage_is_garbled(body: bytes) -> None:
    with pytest.raises(codec.Garbled):
        codec.decode(signed(body), KEY)


def test_oversized_datagram_is_refused_before_the_mac() -> None:
    datagram = codec.encode(message(), KEY)
    with pytest.raises(codec.Oversized):
        codec.decode(datagram, KEY, max_datagram=len(datagram) - 1)
    with pytest.raises(codec.Oversized):
        codec.decode(b"\0" * (codec.MAX_DATAGRAM + 1), KEY)


def test_a_zip_bomb_is_oversized_not_inflated() -> None:
    padding = " " * (4 * codec.MAX_MESSAGE)
    body = zlib.compress(json.dumps(message()).encode()[:-1] + padding.encode() + b"}")
    assert len(body) < 16 * 1024
    with pytest.raises(codec.Oversized):
        codec.decode(signed(body), KEY)


def test_rejections_carry_the_metric_reason() -> None:
    assert codec.BadSignature.reason == "bad_hmac"
    assert codec.Garbled.reason == "garbled"
    assert codec.Oversized.reason == "oversized"


# -- the sender's message ----------------------------------------------------------------------


def stat_rows(bin_: int, bout: int, stot: int, ereq: int, scur: int) -> list[dict[str, Any]]:
    backend = f"{POOL}:{LISTENER}"
    return [
        {
            "pxname": LISTENER,
            "svname": "FRONTEND",
            "type": 0,
            "status": "OPEN",
            "bin": bin_,
            "bout": bout,
            "stot": stot,
            "ereq": ereq,
            "scur": scur,
        },
        {"pxname": backend, "svname": MEMBER_A, "type": 2, "status": "UP 1/3", "weight": 1},
        {"pxname": backend, "svname": MEMBER_B, "type": 2, "status": "DOWN", "weight": 1},
        {"pxname": backend, "svname": "BACKEND", "type": 1, "status": "UP"},
        {"pxname": "stats", "svname": "FRONTEND", "type": 0, "status": "STOP", "bin": 5},
    ]


def test_first_message_reports_counters_whole_then_deltas() -> None:
    first, baseline = build_message("amp-1", 1, stat_rows(100, 200, 10, 1, 4), {})
    assert first["listeners"] == {
        LISTENER: {
            "status": "OPEN",
            "stats": {"conns": 4, "rx": 100, "tx": 200, "totconns": 10, "ereq": 1},
        }
    }
    second, _ = build_message("amp-1", 2, stat_rows(150, 260, 13, 1, 2), baseline)
    assert second["listeners"][LISTENER]["stats"] == {
        "conns": 2,
        "rx": 50,
        "tx": 60,
        "totconns": 3,
        "ereq": 0,
    }


def test_a_counter_reset_is_sent_whole() -> None:
    _, baseline = build_message("amp-1", 1, stat_rows(1000, 2000, 50, 5, 0), {})
    after_restart, _ = build_message("amp-1", 2, stat_rows(30, 40, 2, 0, 1), baseline)
    assert after_restart["listeners"][LISTENER]["stats"] == {
        "conns": 1,
        "rx": 30,
        "tx": 40,
        "totconns": 2,
        "ereq": 0,
    }


def test_pools_and_members_use_the_v3_vocabulary() -> None:
    built, _ = build_message("amp-1", 1, stat_rows(0, 0, 0, 0, 0), {})
    idle = {"conns": 0, "rx": 0, "tx": 0, "totconns": 0, "ereq": 0}
    assert built["pools"] == {
        f"{POOL}:{LISTENER}": {
            "status": "UP",
            "members": {MEMBER_A: "UP", MEMBER_B: "DOWN"},
            "member_stats": {MEMBER_A: idle, MEMBER_B: idle},
        }
    }
    assert set(built["listeners"]) == {LISTENER}  # a stopped frontend is no listener
    assert built["ver"] == 3 and built["id"] == "amp-1" and built["seq"] == 1


def server_row(
    member: str, bin_: int, bout: int, stot: int, eresp: int, scur: int
) -> dict[str, Any]:
    return {
        "pxname": f"{POOL}:{LISTENER}",
        "svname": member,
        "type": 2,
        "status": "UP",
        "weight": 1,
        "bin": bin_,
        "bout": bout,
        "stot": stot,
        "eresp": eresp,
        "ereq": None,
        "scur": scur,
    }


def test_member_counters_go_out_whole_then_as_deltas() -> None:
    first, baseline = build_message("amp-1", 1, [server_row(MEMBER_A, 100, 900, 5, 1, 2)], {})
    assert first["pools"][f"{POOL}:{LISTENER}"]["member_stats"] == {
        MEMBER_A: {"conns": 2, "rx": 100, "tx": 900, "totconns": 5, "ereq": 1}
    }
    second, baseline = build_message(
        "amp-1", 2, [server_row(MEMBER_A, 160, 1000, 8, 1, 0)], baseline
    )
    assert second["pools"][f"{POOL}:{LISTENER}"]["member_stats"] == {
        MEMBER_A: {"conns": 0, "rx": 60, "tx": 100, "totconns": 3, "ereq": 0}
    }
    restarted, _ = build_message("amp-1", 3, [server_row(MEMBER_A, 7, 8, 1, 0, 1)], baseline)
    assert restarted["pools"][f"{POOL}:{LISTENER}"]["member_stats"][MEMBER_A] == {
        "conns": 1,
        "rx": 7,
        "tx": 8,
        "totconns": 1,
        "ereq": 0,
    }


def test_member_counters_round_trip_and_old_messages_decode_without_them() -> None:
    built, _ = build_message("amp-1", 1, [server_row(MEMBER_A, 1, 2, 3, 4, 5)], {})
    pool = codec.decode(codec.encode(built, KEY), KEY).pools[f"{POOL}:{LISTENER}"]
    assert pool.member_stats[MEMBER_A].model_dump() == {
        "rx": 1,
        "tx": 2,
        "conns": 5,
        "totconns": 3,
        "ereq": 4,
    }
    old = codec.decode(codec.encode(message(), KEY), KEY).pools[f"{POOL}:{LISTENER}"]
    assert old.members == {MEMBER_A: "UP"} and old.member_stats == {}


def test_negative_member_counters_are_garbled() -> None:
    bad = message(
        pools={f"{POOL}:{LISTENER}": {"status": "UP", "member_stats": {MEMBER_A: {"rx": -1}}}}
    )
    with pytest.raises(codec.Garbled):
        codec.decode(codec.encode(bad, KEY), KEY)


def _members(count: int, counter: int) -> list[dict[str, Any]]:
    return [
        server_row(
            str(uuid.UUID(int=(n * 0x9E3779B97F4A7C15) % 2**128)), counter * n, counter, n, 0, 1
        )
        for n in range(count)
    ]


async def test_many_members_fit_one_datagram() -> None:
    rows = _members(1000, 123_456_789)
    sender = HeartbeatSender(
        HeartbeatConfig("amp-1", KEY, (("127.0.0.1", 9),), 1.0), lambda: _rows(rows)
    )
    datagram = await sender.beat()
    assert len(datagram) <= codec.MAX_DATAGRAM
    pool = codec.decode(datagram, KEY).pools[f"{POOL}:{LISTENER}"]
    assert len(pool.member_stats) == 1000


async def test_a_message_too_big_for_one_datagram_goes_out_without_member_counters() -> None:
    rows = _members(2000, 1)
    grown = [dict(r, bin=r["bin"] + 5, stot=r["stot"] + 1) for r in rows]
    batches = iter([rows, grown, rows[:10]])
    sender = HeartbeatSender(
        HeartbeatConfig("amp-1", KEY, (("127.0.0.1", 9),), 1.0), lambda: _rows(next(batches))
    )
    too_big = codec.encode(build_message("amp-1", 1, rows, {})[0], KEY)
    assert len(too_big) > codec.MAX_DATAGRAM  # the case under test
    for _ in range(2):
        datagram = await sender.beat()
        assert len(datagram) <= codec.MAX_DATAGRAM
        pool = codec.decode(datagram, KEY).pools[f"{POOL}:{LISTENER}"]
        assert len(pool.members) == 2000 and pool.member_stats == {}
    # Once it fits again, the counters not sent are in the delta (measured from zero).
    pool = codec.decode(await sender.beat(), KEY).pools[f"{POOL}:{LISTENER}"]
    first = str(uuid.UUID(int=0))
    assert pool.member_stats[first].totconns == 0 and len(pool.member_stats) == 10
    tenth = rows[9]["svname"]
    assert pool.member_stats[tenth].totconns == 9


async def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows


@pytest.mark.parametrize(
    ("status", "weight", "expected"),
    [
        ("UP", 1, "UP"),
        ("UP 2/3", 1, "UP"),
        ("UP", 0, "DRAIN"),
        ("DOWN 1/2", 1, "DOWN"),
        ("DRAIN", 1, "DRAIN"),
        ("NOLB", 1, "DRAIN"),
        ("MAINT", 1, "MAINT"),
        ("MAINT (resolution)", 1, "MAINT"),
        ("no check", 1, "no check"),
    ],
)
def test_server_status_mapping(status: str, weight: int, expected: str) -> None:
    row = {
        "pxname": f"{POOL}:{LISTENER}",
        "svname": MEMBER_A,
        "type": 2,
        "status": status,
        "weight": weight,
    }
    built, _ = build_message("amp-1", 1, [row], {})
    assert built["pools"][f"{POOL}:{LISTENER}"]["members"][MEMBER_A] == expected


def test_without_haproxy_the_message_is_empty_but_valid() -> None:
    built, baseline = build_message("amp-1", 9, [], {LISTENER: [1, 2, 3, 4]})
    assert built["listeners"] == {} and built["pools"] == {} and baseline == {}
    assert codec.decode(codec.encode(built, KEY), KEY).seq == 9


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:5555", ("127.0.0.1", 5555)),
        ("[::1]:5555", ("::1", 5555)),
        ("health.local:9", ("health.local", 9)),
    ],
)
def test_endpoints_parse(text: str, parsed: tuple[str, int]) -> None:
    assert parse_endpoint(text) == parsed


@pytest.mark.parametrize("text", ["127.0.0.1", ":5555", "host:0", "host:99999", "host:x"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_endpoint(text)


# -- the agent's heartbeat settings ------------------------------------------------------------


def agent_settings(**values: Any) -> AmphoraSettings:
    base: dict[str, Any] = {
        "amphora_id": "amp-1",
        "lb_id": "lb-1",
        "state_dir": "/nonexistent",
        "ca_cert": "/nonexistent/ca.pem",
        "server_cert": "/nonexistent/server.pem",
        "server_key": "/nonexistent/server.key",
    }
    return AmphoraSettings(**(base | values))


def test_heartbeats_are_off_without_key_and_endpoints() -> None:
    assert HeartbeatConfig.from_settings(agent_settings()) is None


def test_heartbeat_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULCRUM_AMPHORA_HEARTBEAT_KEY", "k")
    monkeypatch.setenv("FULCRUM_AMPHORA_HEALTH_ENDPOINTS", '["127.0.0.1:5555", "[::1]:5556"]')
    monkeypatch.setenv("FULCRUM_AMPHORA_HEARTBEAT_INTERVAL", "0.5")
    config = HeartbeatConfig.from_settings(agent_settings())
    assert config is not None
    assert config.key == b"k" and config.interval == 0.5 and config.amphora_id == "amp-1"
    assert config.endpoints == (("127.0.0.1", 5555), ("::1", 5556))


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"heartbeat_key": "k"}, "HEALTH_ENDPOINTS"),
        ({"health_endpoints": ["127.0.0.1:5555"]}, "HEARTBEAT_KEY"),
        ({"heartbeat_key": "  ", "health_endpoints": ["127.0.0.1:5555"]}, "HEARTBEAT_KEY"),
        ({"heartbeat_key": "k", "health_endpoints": ["nowhere"]}, "host:port"),
    ],
)
def test_half_configured_heartbeats_are_refused(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        HeartbeatConfig.from_settings(agent_settings(**values))


async def test_heartbeats_carry_the_cores_haproxy_used_since_the_previous_beat() -> None:
    """No ``cpu`` on the first beat (no previous reading) nor while HAProxy does not run;
    then CPU seconds over elapsed seconds. A process's CPU comes from /proc."""
    readings = iter([1.0, 1.5, None, 2.0, 2.2])
    sender = HeartbeatSender(
        HeartbeatConfig("amp-1", KEY, (("127.0.0.1", 9),), 1.0),
        lambda: _rows([]),
        cpu_seconds=lambda: next(readings),
    )
    assert codec.decode(await sender.beat(), KEY).cpu is None
    second = codec.decode(await sender.beat(), KEY).cpu
    assert second is not None and second > 0
    assert codec.decode(await sender.beat(), KEY).cpu is None  # not running
    assert codec.decode(await sender.beat(), KEY).cpu is None  # running again: a new start
    assert (codec.decode(await sender.beat(), KEY).cpu or 0) > 0
    with pytest.raises(codec.Garbled):
        codec.decode(codec.encode({"id": "a", "seq": 1, "ver": 3, "cpu": -1}, KEY), KEY)
    busy = time.process_time()
    while time.process_time() - busy < 0.05:
        pass
    used = process_cpu_seconds(os.getpid())
    assert used is not None and used >= 0.05
    assert process_cpu_seconds(2**22 + 7) is None


async def test_the_counters_baseline_is_written_when_it_moves_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    rows = _members(2, 100)
    batches = iter([rows, rows, [dict(r, bin=r["bin"] + 5) for r in rows]])
    config = HeartbeatConfig("amp-1", KEY, (("127.0.0.1", 9),), 1.0)
    sender = HeartbeatSender(config, lambda: _rows(next(batches)), tmp_path)
    await sender.beat()
    (saved,) = tmp_path.iterdir()
    written = saved.stat().st_ino
    await sender.beat()  # idle: the same counters, no write (each costs a rename)
    assert saved.stat().st_ino == written
    await sender.beat()
    assert saved.stat().st_ino != written
    # A restarted agent starts from the saved counters: its first beat sends deltas.
    restarted = HeartbeatSender(config, lambda: _rows(rows), tmp_path)
    assert restarted._baseline == sender._baseline


# The header of `show stat` as HAProxy 2.6 sends it (every column a beat reads, among others).
_SHOW_STAT_HEADER = "# " + (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wred"
    "is,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbto"
    "t,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp"
    "_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt"
    ",srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,"
    "ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,c"
    "heck_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_m"
    "ax,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src"
    "_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_c"
    "ur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_"
    "sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2"
    "_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol"
    "_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_t"
    "otal_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_con"
    "nections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_ou"
    "t,"
)


def _show_stat(rows: list[dict[str, object]]) -> str:
    header = _SHOW_STAT_HEADER[2:].split(",")
    lines = [_SHOW_STAT_HEADER]
    for row in rows:
        lines.append(",".join(str(row.get(column, "")) for column in header))
    return "\n".join(lines) + "\n"


def test_a_beat_reads_only_its_columns_and_builds_the_same_message() -> None:
    text = _show_stat(
        [
            {
                "pxname": "l1",
                "svname": "FRONTEND",
                "type": 0,
                "status": "OPEN",
                "scur": 3,
                "stot": 40,
                "bin": 500,
                "bout": 900,
                "ereq": 1,
                "rate": 7,
                "hrsp_2xx": 38,
            },
            {"pxname": "p1:l1", "svname": "BACKEND", "type": 1, "status": "UP", "stot": 40},
            {
                "pxname": "p1:l1",
                "svname": "m1",
                "type": 2,
                "status": "UP",
                "weight": 1,
                "scur": 1,
                "stot": 20,
                "bin": 250,
                "bout": 450,
                "eresp": 2,
                "check_status": "L4OK",
            },
            {
                "pxname": "p1:l1",
                "svname": "m2",
                "type": 2,
                "status": "UP",
                "weight": 0,
                "stot": 20,
                "bin": 250,
                "bout": 450,
            },
        ]
    )
    every = parse_show_stat(text)
    few = parse_show_stat(text, STAT_COLUMNS)
    assert all(set(row) == STAT_COLUMNS for row in few)
    assert all(len(row) > 100 for row in every)
    baseline = {"l1": [100, 100, 10, 0]}
    assert build_message("amp", 7, few, baseline) == build_message("amp", 7, every, baseline)


def test_a_kept_cpu_reader_counts_children_that_start_after_its_first_reading() -> None:
    reader = ProcessCpu(os.getpid())
    try:
        first = reader.seconds()
        assert first is not None
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time\nt = time.process_time()\n"
                "while time.process_time() - t < 0.3: pass\ntime.sleep(30)",
            ]
        )
        try:
            deadline = time.monotonic() + 10
            while (process_cpu_seconds(child.pid) or 0) < 0.3 and time.monotonic() < deadline:
                time.sleep(0.05)
            second = reader.seconds()
            assert second is not None and second - first >= 0.3
        finally:
            child.kill()
            child.wait(timeout=10)
        assert reader.seconds() is not None  # the child's files went with it: read again
    finally:
        reader.close()
    assert ProcessCpu(2**22 + 7).seconds() is None


def test_a_quoted_field_with_commas_parses_as_one_field() -> None:
    """HAProxy quotes a field that holds a comma (a check's description, say); rows without
    quotes take the plain split, and both give the same columns."""
    text = (
        "# pxname,svname,status,check_desc,scur,\n"
        'pool:l1,m1,DOWN,"Layer4 timeout, check failed",3,\n'
        "pool:l1,m2,UP,Layer4 check passed,0,\n"
    )
    rows = parse_show_stat(text)
    assert rows[0] == {
        "pxname": "pool:l1",
        "svname": "m1",
        "status": "DOWN",
        "check_desc": "Layer4 timeout, check failed",
        "scur": 3,
    }
    unquoted = text.replace('"Layer4 timeout, check failed"', "timeout")
    assert parse_show_stat(unquoted)[1] == rows[1]
    assert parse_show_stat(unquoted)[0]["check_desc"] == "timeout"
    assert parse_show_stat(text, {"svname", "scur"}) == [
        {"svname": "m1", "scur": 3},
        {"svname": "m2", "scur": 0},
    ]
