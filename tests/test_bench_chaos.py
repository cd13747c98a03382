"""The chaos benchmark's short run: every fault kind, and every property holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.chaos import KINDS

ROOT = Path(__file__).parent.parent


def test_a_short_chaos_run_injects_every_fault_and_keeps_every_promise() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--seconds", "15", "--seed", "7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    report = json.loads(out.stdout)
    assert set(report["faults"]) == set(KINDS), report["faults"]
    kv = report["kv"]
    assert kv["completed"] > 0 and kv["linearizable"], kv
    leases = report["leases"]
    assert leases["spurious_losses"] == 0 and leases["alive_at_end"] == leases["count"], leases
    elections = report["elections"]
    assert elections["terms"] >= 2 and elections["tokens_strictly_increasing"], elections
    assert elections["overlapping_terms"] == 0 and elections["out_of_order_accepted"] == 0
    assert elections["fenced_writes_accepted"] > 0
