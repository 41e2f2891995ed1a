"""VIP ranges of local stacks (``deploy/local/ports.py``): stacks starting at the same moment
never take the same 127.<N>.0.0/16, and a claim holds from the moment it is made (before the
claimant's supervisor runs) until its claimant is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.local import ports

# A claimant as ``fulcrum up`` is one: a process whose command line names fulcrum. It claims a
# range for its state dir, prints it, and lives until its stdin closes.
CLAIMANT = """
import sys
from pathlib import Path
from deploy.local.ports import _vip_octet
print(_vip_octet(None, Path(sys.argv[1])), flush=True)
sys.stdin.read()
"""


def start_claimant(tmp_path: Path, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMANT, str(state), "fulcrum-up-claimant"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        cwd=Path(__file__).resolve().parents[2],
    )


def test_stacks_starting_together_take_distinct_ranges(tmp_path: Path) -> None:
    claimants = [start_claimant(tmp_path, tmp_path / f"stack-{i}") for i in range(6)]
    try:
        octets = [int(c.stdout.readline()) for c in claimants if c.stdout is not None]
    finally:
        for claimant in claimants:
            claimant.communicate(timeout=30)
    assert len(octets) == 6 and len(set(octets)) == 6, octets


def test_a_claim_holds_while_its_claimant_runs_and_ends_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "VIP_CLAIMS", tmp_path / "fulcrum-vip-ranges")
    monkeypatch.setattr(ports, "_loopback_listener_octets", set)
    claimant = start_claimant(tmp_path, tmp_path / "starting")
    try:
        assert claimant.stdout is not None
        taken = int(claimant.stdout.readline())
        # Its supervisor does not run yet: the claiming process alone holds the range.
        assert ports._vip_octet(None, tmp_path / "other") != taken
        assert ports._vip_octet(taken, tmp_path / "third") != taken  # even as a saved range
    finally:
        claimant.communicate(timeout=30)
    assert ports._vip_octet(taken, tmp_path / "third") == taken
