"""The examples run and say what they promise."""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def _stdout_of(*args: str) -> str:
    """Run ``python ARGS``; fail with its output unless it exits 0."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_embedded_cluster_example_runs() -> None:
    stdout = _stdout_of(str(EXAMPLES / "embedded_cluster.py"))
    assert "took over" in stdout
    assert "every increment was applied exactly once" in stdout


def test_election_fencing_example_runs() -> None:
    stdout = _stdout_of(str(EXAMPLES / "election_fencing.py"))
    assert "db-a's late write inside the cluster applied: False" in stdout
    assert "db-a's late action at the resource refused" in stdout
    assert "db-b still holds after the failover: True" in stdout
    assert "orders/primary = db-b" in stdout


def test_the_readme_demo_shows_election_failover_and_fencing() -> None:
    stdout = _stdout_of("-m", "hacoord", "demo")
    assert "took over in term" in stdout
    assert "service-a kept its leadership (and lease) across the failover: True" in stdout
    assert "service-a's late action at the database refused" in stdout
    assert "election, failover and fencing: ok" in stdout


def test_mysql_failover_example_runs() -> None:
    stdout = _stdout_of(str(EXAMPLES / "mysql_failover.py"))
    assert "switchover succeeded" in stdout and "failover succeeded" in stdout
    assert "came back read-only and was rejoined" in stdout
    assert stdout.count(" succeeded token ") == 3, "the history lists all three runs"


def test_mysql_failover_daemon_example_runs_a_whole_site() -> None:
    stdout = _stdout_of(str(EXAMPLES / "mysql_failover_daemon.py"), "demo")
    assert "failed over to" in stdout and "members cannot reach" in stdout
    assert "writes resumed on the new primary: 2 rows, none lost" in stdout
    assert "[published primary]" in stdout, "hacoord mysql status prints the tree"
    assert "DNS answers the new primary: True" in stdout
    assert "failover workflow succeeded" in stdout


def test_k8s_rollout_example_replaces_every_member_and_loses_nothing() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "k8s_rollout.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("(rollout) succeeded") == 3, out.stdout
    fewest = re.search(r"fewest members up at any sample: (\d) of 3", out.stdout)
    assert fewest is not None and int(fewest.group(1)) == 2, out.stdout
    acked = re.search(r"writes acknowledged: (\d+), lost: 0\n", out.stdout)
    assert acked is not None and int(acked.group(1)) > 0, out.stdout


def test_kafka_failover_example_moves_to_the_new_primary_and_loses_nothing() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "kafka_failover.py")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "topology v2: primary k2" in out.stdout, out.stdout
    assert "first acknowledgement on k2" in out.stdout, out.stdout
    result = re.search(r"acknowledged: (\d+), consumed: (\d+), lost: 0,", out.stdout)
    assert result is not None and int(result.group(1)) >= 400, out.stdout
