"""The coordination simulator: determinism, that its checks have teeth, and its CLI."""

import json

import pytest

from hacoord.sim.coord import CoordSimConfig, CoordSimulation
from hacoord.sim.coord_cli import main


def test_a_seed_replays_exactly() -> None:
    a = CoordSimulation(11).run()
    b = CoordSimulation(11).run()
    assert a == b
    assert a.events > 1000


@pytest.mark.parametrize(("nodes", "start"), [(3, 0), (5, 100_000)])
def test_faulty_runs_keep_leases_and_elections_safe(nodes: int, start: int) -> None:
    results = []
    for seed in range(start, start + 20):
        config = CoordSimConfig()
        config.raft.nodes = nodes
        result = CoordSimulation(seed, config).run()
        assert result.violations == [], f"seed {seed}: {result.violations}"
        results.append(result)
    # The run exercised what the checks look at: holders came and went, leases
    # expired in the cluster, fenced writes landed, and check (c) was armed.
    assert sum(r.holders for r in results) > 20
    assert sum(r.expiries for r in results) > 0
    assert sum(r.fenced_writes for r in results) > 100
    assert sum(r.clean_windows for r in results) > 20
    assert sum(r.elections for r in results) > 40


def test_without_faults_no_lease_expires_needlessly() -> None:
    config = CoordSimConfig()
    config.raft.faults = False
    config.client_faults = False
    result = CoordSimulation(5, config).run()
    assert result.violations == []
    assert result.elections == 1
    assert result.clean_windows > 0


def test_cli_prints_one_json_line_with_the_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3", "--start", "20"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    summary = json.loads(out[0])
    assert summary["seeds"] == 3 and summary["violations"] == 0
    for field in ("elections", "holders", "expiries", "fenced_writes", "clean_windows"):
        assert field in summary
    assert "planted" not in summary


def test_cli_prints_the_replay_line_of_a_failing_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "1", "--start", "10", "--plant", "token_from_lease"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["failed_seeds"] == [10]
    assert summary["planted"] == ["token_from_lease"]
    assert "VIOLATION seed 10:" in captured.err
    replay = "python -m hacoord.sim.coord --seeds 1 --start 10 --nodes 3 --plant token_from_lease"
    assert replay in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--duration-ms", "2000"], "--duration-ms must be >= 3000"),
        (["--attempt-timeout-ms", "0"], "--attempt-timeout-ms must be > 0"),
        (["--plant", "no_such_bug"], "invalid choice: 'no_such_bug'"),
    ],
)
def test_cli_rejects_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_planted_bug_is_refused_by_the_library() -> None:
    with pytest.raises(ValueError, match="unknown planted bug"):
        CoordSimulation(1, CoordSimConfig(bugs=frozenset({"typo"})))
