"""bench_dataplane.py and bench_fleet.py: their command lines refuse bad input with a reason;
the data-plane ratios leave out pairs without answers."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import pytest

from bench import bench_dataplane, bench_fleet

Parse = Callable[[list[str]], argparse.Namespace]


def refused(parse: Parse, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``parse(argv)``'s exit status must be 2; returns what it said."""
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--rounds", "3"], "--rounds must be between 4 and 200"),
        (["--seconds", "0"], "--seconds must be between 1 and 10"),
        (["--lb-cpu", "4096"], "--lb-cpu must be one of the CPUs allowed"),
        (["--client-cpu", "-1"], "--client-cpu must be one of the CPUs allowed"),
    ],
)
def test_dataplane_refuses_bad_options(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reason in refused(bench_dataplane.parse_args, argv, capsys)


def test_dataplane_refuses_one_cpu_for_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    cpu = str(min(os.sched_getaffinity(0)))
    argv = ["--lb-cpu", cpu, "--client-cpu", cpu]
    assert "--lb-cpu and --client-cpu must differ" in refused(
        bench_dataplane.parse_args, argv, capsys
    )


def test_dataplane_defaults_pin_two_cpus() -> None:
    args = bench_dataplane.parse_args([])
    assert (args.lb_cpu, args.client_cpu, args.alternating) == (0, 1, False)


def test_fleet_refuses_an_unknown_driver(capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice: 'vm'" in refused(bench_fleet.parse_args, ["--driver", "vm"], capsys)


@pytest.mark.parametrize("driver", ["netns", "docker"])
def test_fleet_bounds_network_driver_fleets(
    driver: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--driver", driver, "--count", "101"]
    said = refused(bench_fleet.parse_args, argv, capsys)
    assert f"--count must be at most 100 with --driver {driver}" in said
    assert bench_fleet.parse_args(["--driver", driver, "--count", "100"]).count == 100


def test_fleet_runs_the_process_driver_by_default() -> None:
    assert bench_fleet.parse_args([]).driver == "process"


def test_dataplane_pairs_without_answers_give_no_ratio() -> None:
    sample = bench_dataplane.Sample
    ours = [sample(100.0, 100, 10.0), sample(0.0, 0, 0.0), sample(300.0, 300, 10.0)]
    theirs = [sample(200.0, 200, 20.0), sample(50.0, 50, 10.0), sample(300.0, 300, 10.0)]
    figure = bench_dataplane.Figure(ours, theirs)
    assert figure.dropped == 1
    assert figure.rate_ratio.ratios == [0.5, 1.0]
    assert figure.cost_ratio.ratios == [2.0, 1.0]


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--per-process", "0"], "--per-process must be between 1 and 1000"),
        (["--driver", "netns", "--per-process", "25", "--count", "10"], "process driver only"),
    ],
)
def test_fleet_refuses_agent_hosts_it_cannot_run(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reason in refused(bench_fleet.parse_args, argv, capsys)
    assert bench_fleet.parse_args(["--per-process", "25"]).per_process == 25
