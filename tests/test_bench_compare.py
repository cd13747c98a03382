"""The comparison harness runs end to end in --quick mode and reports every figure.

No timing is asserted: only that each workload ran against each system and produced
its fields (figures belong in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_quick_comparison_reports_every_field(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["systems"]) == {"hacoord", "etcd", "pysyncobj"}
    for name, data in results["systems"].items():
        assert data["serial"]["writes"] == results["plan"]["serial_writes"], name
        assert data["serial"]["p50_ms"] > 0 and data["serial"]["p99_ms"] >= data["serial"]["p50_ms"]
        assert [row["concurrency"] for row in data["throughput"]] == results["plan"][
            "concurrencies"
        ]
        assert all(row["ops_per_s"] > 0 for row in data["throughput"]), name
        assert data["reads"]["ops_per_s"] > 0, name
        assert data["failover"]["kills"] == results["plan"]["kills"], name
        assert data["failover"]["max_ms"] >= data["failover"]["p50_ms"] > 0, name
    for name in ("hacoord", "etcd"):
        leases = results["systems"][name]["leases"]
        assert leases["leases"] == results["plan"]["leases"]
        assert {"spurious_expiries", "leader_cpu_percent", "keepalive_p99_ms"} <= set(leases)
    assert "leases" not in results["systems"]["pysyncobj"]
    for name in ("hacoord", "pysyncobj"):
        assert results["systems"][name]["embedded_ops_per_s"] > 0
    assert "embedded_ops_per_s" not in results["systems"]["etcd"]
    assert all(value is not None for value in results["goals"].values()), results["goals"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| c=64 ops/s |" in markdown and "### Goals" in markdown
    for plot in ("latency_cdf.png", "throughput.png", "failover.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"
