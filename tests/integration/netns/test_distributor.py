"""The ACTIVE_ACTIVE distributor with real traffic: one VIP spread over amphora namespaces (each
a tiny HTTP + UDP server answering its name) by nftables and policy routing, seen from the
lab's client namespace. New connections spread over the serving amphorae; a drained amphora
keeps its keep-alive connections and gets no new ones; a removed amphora's connections, and
only those, fail; an added amphora takes new connections while old ones stay put."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from libs.common.errors import InfrastructureError
from services.provisioner.adapters.netns_distributor import (
    DISTRIBUTOR_INTERFACE,
    NetnsDistributor,
)
from tests.integration.netns.distributor_lab import (
    PORT,
    TOOLS,
    DistributorRig,
    distributor_rig,
)
from tests.integration.netns.lab import PYTHON, REPO, NetnsLab

pytestmark = pytest.mark.netns


class Held:
    """Keep-alive connections (or UDP flows) held by a client process; ``round`` asks on
    every one."""

    def __init__(self, lab: NetnsLab, count: int, *, udp: bool = False) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.client_ns, PYTHON, "-m", TOOLS, "hold",
             "--host", lab.vip(), "--port", str(PORT), "--count", str(count),
             *(["--udp"] if udp else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, cwd=REPO,
        )  # fmt: skip
        lab.processes.append(self.proc)
        self.first = self._read()

    def _read(self) -> list[str]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the holding client died"
        return [str(a) for a in json.loads(line)]

    def close(self) -> None:
        """Close the client's stdin: it exits (``lab.cleanup`` kills it otherwise)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def round(self) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        return self._read()


def _failed_alike(answers: list[str]) -> list[str]:
    """The answers, every error as plain "error" (a reset socket fails differently later)."""
    return ["error" if a.startswith("error:") else a for a in answers]


@pytest.fixture
async def rig(lab: NetnsLab, tmp_path: Path) -> AsyncIterator[DistributorRig]:
    async with distributor_rig(lab, tmp_path) as rig:
        yield rig


def _in_band(counts: Counter[str], names: list[str], total: int) -> None:
    """Every answer from ``names``, none failed, each name within 0.4x and 1.6x its share
    (over 3 sigma of the hash's binomial spread at these counts)."""
    assert set(counts) == set(names), counts
    share = total / len(names)
    for name in names:
        assert share * 0.4 <= counts[name] <= share * 1.6, counts


async def test_spread_drain_remove_add(rig: DistributorRig) -> None:
    names = ["a1", "a2", "a3"]
    namespaces = {n: rig.amphora_ns(n) for n in names}
    for index, name in enumerate(names, start=1):
        await rig.start_amphora(name, index)
    # Wired but not serving: the distributor refuses connections to the VIP itself.
    assert set(rig.spread(2)) == {"error:ConnectionRefusedError"}
    for ns in namespaces.values():
        await rig.distributor.serve(ns)

    _in_band(rig.spread(90), names, 90)
    _in_band(rig.spread(90, udp=True), names, 90)
    # Replies crossed the distributor: its conntrack saw both directions of every forwarded
    # connection.
    tracked = subprocess.run(
        ["ip", "netns", "exec", rig.distributor.layout.namespace,
         "conntrack", "-L", "-p", "tcp", "-d", rig.lab.vip()],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    forwarded = [line for line in tracked if " mark=0 " not in line]  # not the refused ones
    assert len(forwarded) >= 90 and all("ASSURED" in line for line in forwarded), tracked
    # The VIP answers ARP from the distributor only: the client's neighbour is its MAC.
    mac = subprocess.run(
        ["ip", "-n", rig.distributor.layout.namespace, "-br", "link", "show", "eth0"],
        capture_output=True, text=True, check=True,
    ).stdout.split()[2]  # fmt: skip
    neighbours = subprocess.run(
        ["ip", "-n", rig.lab.client_ns, "neigh", "show", rig.lab.vip()],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert mac in neighbours, neighbours

    held = Held(rig.lab, 24)
    flows = Held(rig.lab, 24, udp=True)
    try:
        await _drain_remove_add(rig, held, flows, namespaces)
    finally:
        held.close()
        flows.close()


async def _drain_remove_add(
    rig: DistributorRig, held: Held, flows: Held, namespaces: dict[str, str]
) -> None:
    before, flows_before = held.first, flows.first
    # 24 connections (flows): every amphora holds some.
    assert set(before) == set(flows_before) == set(namespaces), (before, flows_before)

    await rig.distributor.drain(namespaces["a1"])
    # a1's connections and flows keep working, every one on its amphora.
    assert held.round() == before
    assert flows.round() == flows_before
    drained = rig.spread(60)
    assert set(drained) == {"a2", "a3"}, drained

    await rig.distributor.remove(namespaces["a2"])
    after_remove, flows_after_remove = held.round(), flows.round()
    for was, now in [
        *zip(before, after_remove, strict=True),
        *zip(flows_before, flows_after_remove, strict=True),
    ]:
        if was == "a2":
            assert now.startswith("error:"), (after_remove, flows_after_remove)
        else:
            assert now == was, (after_remove, flows_after_remove)
    assert rig.spread(20) == Counter({"a3": 20})

    await rig.start_amphora("a4", 4)
    a4 = rig.amphora_ns("a4")
    assert rig.spread(10) == Counter({"a3": 10})  # wired, not serving yet
    await rig.distributor.serve(a4)
    _in_band(rig.spread(60), ["a3", "a4"], 60)
    # Old connections stay put.
    assert _failed_alike(held.round()) == _failed_alike(after_remove)
    assert _failed_alike(flows.round()) == _failed_alike(flows_after_remove)
    # The removed amphora lost its link and the VIP.
    links = subprocess.run(
        ["ip", "-n", namespaces["a2"], "-br", "link"], capture_output=True, text=True
    ).stdout
    assert DISTRIBUTOR_INTERFACE not in links
    assert (
        rig.lab.vip()
        not in subprocess.run(
            ["ip", "-n", namespaces["a2"], "addr", "show", "lo"], capture_output=True, text=True
        ).stdout
    )
    # Slots come back round robin: a4 takes slot 4, not the removed a2's slot 2.
    assert [(b.namespace, b.slot, b.serving) for b in rig.distributor.backends] == [
        (namespaces["a1"], 1, False),
        (namespaces["a3"], 3, True),
        (a4, 4, True),
    ]

    # A restarted provisioner adopts the distributor from the kernel: the same amphorae,
    # slots and serving set, established connections untouched; it carries on from there.
    adopted = NetnsDistributor(rig.network, rig.distributor.layout)
    assert await adopted.adopt()
    assert adopted.backends == rig.distributor.backends
    assert _failed_alike(held.round()) == _failed_alike(after_remove)
    await adopted.serve(namespaces["a1"])
    _in_band(rig.spread(90), ["a1", "a3", "a4"], 90)


async def test_refusals_leave_nothing_behind(rig: DistributorRig) -> None:
    """An amphora namespace that does not exist, one wired twice, one never wired: refused,
    and the distributor keeps no half-made link."""
    distributor = rig.distributor
    with pytest.raises(InfrastructureError):
        await distributor.add(rig.amphora_ns("missing"))
    with pytest.raises(InfrastructureError):
        await distributor.serve(rig.amphora_ns("missing"))
    await rig.start_amphora("a1", 1)
    with pytest.raises(InfrastructureError):
        await distributor.add(rig.amphora_ns("a1"))
    links = subprocess.run(
        ["ip", "-n", distributor.layout.namespace, "-br", "link"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert sorted(line.split("@")[0].split()[0] for line in links.splitlines()) == [
        "d2",
        "eth0",
        "lo",
    ]
    assert [(b.slot, b.serving) for b in distributor.backends] == [(2, False)]
