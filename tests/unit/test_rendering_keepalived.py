"""The keepalived renderer: golden files for the MASTER and BACKUP of a pair, validation of its
inputs, and (keepalived being installed with haproxy) ``keepalived -t`` on what it renders.

``FULCRUM_UPDATE_GOLDEN=1`` rewrites the golden files instead of comparing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import pytest
from pydantic import ValidationError

from services.provisioner.rendering.keepalived import (
    KeepalivedContext,
    render_keepalived,
    virtual_router_id,
)
from services.provisioner.settings import VrrpSettings

GOLDEN_DIR: Final = Path(__file__).parent / "golden" / "keepalived"
LB_ID: Final = "11111111-1111-1111-1111-111111111111"


def context(role: str = "MASTER", **fields: Any) -> KeepalivedContext:
    own, peer = (
        ("198.18.32.2", "198.18.32.3") if role == "MASTER" else ("198.18.32.3", "198.18.32.2")
    )
    values: dict[str, Any] = {
        "lb_id": LB_ID,
        "amphora_id": f"2222222{'2' if role == 'MASTER' else '3'}-2222-2222-2222-222222222222",
        "role": role,
        "interface": "eth0",
        "unicast_src_ip": own,
        "unicast_peers": (peer,),
        "virtual_addresses": ("198.18.32.200",),
        "check_script": "/var/lib/fulcrum/amphora/vrrp-check.sh",
        "notify_script": "/var/lib/fulcrum/amphora/vrrp-notify.sh",
        "notify_fifo": "/var/lib/fulcrum/amphora/vrrp-notify.fifo",
    }
    return KeepalivedContext(**(values | fields))


@pytest.mark.parametrize("role", ["MASTER", "BACKUP"])
def test_golden(role: str) -> None:
    text = render_keepalived(context(role))
    golden = GOLDEN_DIR / f"{role.lower()}.conf"
    if os.environ.get("FULCRUM_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_pair_differs_only_in_what_makes_each_amphora_itself() -> None:
    master, backup = render_keepalived(context("MASTER")), render_keepalived(context("BACKUP"))
    assert "priority 100" in master and "priority 90" in backup
    assert "unicast_src_ip 198.18.32.2" in master and "unicast_src_ip 198.18.32.3" in backup
    for text in (master, backup):
        assert "vrrp_version 3" in text and "advert_int 0.1\n" in text
        assert "state BACKUP" in text and "nopreempt" in text
        assert "198.18.32.200/32 dev eth0" in text
        assert f"virtual_router_id {virtual_router_id(LB_ID)}" in text


@pytest.mark.parametrize("peers", [(), ("198.18.32.2",), ("198.18.32.2", "198.18.32.2")])
def test_a_lone_amphora_is_refused_instead_of_advertising_by_multicast(
    peers: tuple[str, ...],
) -> None:
    with pytest.raises(ValidationError, match="no multicast fallback"):
        context(unicast_peers=peers)  # its own address is never its own peer


def test_peers_are_rendered_once_each_sorted_without_the_own_address(tmp_path: Path) -> None:
    peers = ("198.18.32.9", "198.18.32.2", "198.18.32.3", "198.18.32.9")
    text = render_keepalived(context(unicast_peers=peers))
    block = text.split("unicast_peer {\n", 1)[1].split("}", 1)[0].split()
    assert block == ["198.18.32.3", "198.18.32.9"]
    assert _keepalived_check(text, tmp_path) == ""


@pytest.mark.parametrize("advert_int", [0.1, 0.15, 0.2])
def test_the_advert_interval_settings_allow(advert_int: float, tmp_path: Path) -> None:
    settings = VrrpSettings(advert_int=advert_int)
    text = render_keepalived(context(advert_int=settings.advert_int))
    assert f"advert_int {advert_int:g}\n" in text
    assert _keepalived_check(text, tmp_path) == ""


@pytest.mark.parametrize("advert_int", [0.05, 0.09, 0.125, 0.21, 1.0])
def test_the_advert_interval_settings_refuse(advert_int: float) -> None:
    """0.1-0.2 s in centiseconds: sub-second failover, no false ones on a busy host."""
    with pytest.raises(ValidationError):
        VrrpSettings(advert_int=advert_int)


@pytest.mark.parametrize(
    "fields",
    [
        {"check_script": 'x" ; rm -rf /'},
        {"notify_script": "/with space/notify.sh"},
        {"notify_fifo": 'notify.fifo" ; x'},
        {"interface": "eth0 dev lo"},
        {"virtual_addresses": ("not-an-ip",)},
        {"virtual_addresses": ()},
        {"unicast_peers": ("198.18.32.3\n}",)},
        {"advert_int": 0.001},
        {"advert_int": 0.125},
        {"check_interval": 0},
        {"role": "STANDALONE"},
    ],
)
def test_hostile_or_impossible_inputs_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        context(**fields)


def test_vrid_is_stable_and_in_range() -> None:
    ids = {virtual_router_id(f"lb-{i}") for i in range(1000)}
    assert min(ids) >= 1 and max(ids) <= 255
    assert virtual_router_id(LB_ID) == virtual_router_id(LB_ID)


def _keepalived_check(text: str, directory: Path) -> str:
    """``keepalived -t`` on ``text`` with real scripts; its complaints, "" when accepted."""
    binary = shutil.which("keepalived")
    assert binary, "keepalived is needed (apt install keepalived)"
    for name in ("check.sh", "notify.sh"):
        script = directory / name
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    text = text.replace("/var/lib/fulcrum/amphora/vrrp-check.sh", str(directory / "check.sh"))
    text = text.replace("/var/lib/fulcrum/amphora/vrrp-notify.sh", str(directory / "notify.sh"))
    config = directory / "keepalived.conf"
    config.write_text(text)
    result = subprocess.run([binary, "-t", "-f", str(config)], capture_output=True, text=True)
    return "" if result.returncode == 0 else result.stdout + result.stderr


@pytest.mark.parametrize("role", ["MASTER", "BACKUP"])
def test_keepalived_accepts_what_is_rendered(role: str, tmp_path: Path) -> None:
    assert _keepalived_check(render_keepalived(context(role)), tmp_path) == ""


def test_vips_of_the_other_family_are_moved_but_not_advertised(tmp_path: Path) -> None:
    text = render_keepalived(
        context(virtual_addresses=("198.18.32.200", "fd12:3456:789a:1::c8", "198.18.32.201"))
    )
    advertised = text.split("virtual_ipaddress {", 1)[1].split("}", 1)[0].split()
    excluded = text.split("virtual_ipaddress_excluded {", 1)[1].split("}", 1)[0].split()
    assert advertised == ["198.18.32.200/32", "dev", "eth0", "198.18.32.201/32", "dev", "eth0"]
    assert excluded == ["fd12:3456:789a:1::c8/128", "dev", "eth0"]
    assert _keepalived_check(text, tmp_path) == ""


def test_vrrp_over_ipv6_advertises_the_ipv6_vips(tmp_path: Path) -> None:
    text = render_keepalived(
        context(
            unicast_src_ip="fd12:3456:789a:1::2",
            unicast_peers=("fd12:3456:789a:1::3",),
            virtual_addresses=("fd12:3456:789a:1::c8", "198.18.32.200"),
        )
    )
    advertised = text.split("virtual_ipaddress {", 1)[1].split("}", 1)[0].split()
    excluded = text.split("virtual_ipaddress_excluded {", 1)[1].split("}", 1)[0].split()
    assert advertised == ["fd12:3456:789a:1::c8/128", "dev", "eth0"]
    assert excluded == ["198.18.32.200/32", "dev", "eth0"]
    assert _keepalived_check(text, tmp_path) == ""


def test_a_single_family_lb_has_no_excluded_block() -> None:
    assert "virtual_ipaddress_excluded" not in render_keepalived(context())
