"""The examples run and say what they promise."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_embedded_cluster_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "embedded_cluster.py")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "took over" in out.stdout
    assert "every increment was applied exactly once" in out.stdout


def test_election_fencing_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "election_fencing.py")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "db-a's late write inside the cluster applied: False" in out.stdout
    assert "db-a's late action at the resource refused" in out.stdout
    assert "db-b still holds after the failover: True" in out.stdout
    assert "orders/primary = db-b" in out.stdout


def test_the_readme_demo_shows_election_failover_and_fencing() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hacoord", "demo"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "took over in term" in out.stdout
    assert "service-a kept its leadership (and lease) across the failover: True" in out.stdout
    assert "service-a's late action at the database refused" in out.stdout
    assert "election, failover and fencing: ok" in out.stdout
