"""The simulator itself: determinism, fault coverage, and its command line."""

import json

import pytest

from hacoord.sim.__main__ import main
from hacoord.sim.cluster import SimConfig, Simulation


def test_a_seed_replays_exactly() -> None:
    a = Simulation(7, SimConfig(nodes=3)).run()
    b = Simulation(7, SimConfig(nodes=3)).run()
    assert a == b
    assert a.events > 1000


@pytest.mark.parametrize("nodes", [3, 5])
def test_faulty_runs_elect_commit_and_check_linearizability(nodes: int) -> None:
    for seed in range(5):
        result = Simulation(seed, SimConfig(nodes=nodes)).run()
        assert result.violations == [], f"seed {seed}: {result.violations}"
        assert result.elections >= 1
        assert result.committed > 50
        assert result.ops_checked > 100


def test_without_faults_one_election_suffices() -> None:
    result = Simulation(3, SimConfig(faults=False)).run()
    assert result.violations == []
    assert result.elections == 1


def test_cli_prints_one_json_line_with_the_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3", "--start", "10"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    summary = json.loads(out[0])
    for field in ("seeds", "violations", "elections", "ops_checked"):
        assert field in summary
    assert summary["seeds"] == 3 and summary["violations"] == 0
    assert summary["ops_checked"] > 0


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--seeds", "0"])
    assert exc.value.code == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
