"""Run hacoord, etcd and PySyncObj side by side on this machine.

    python -m benchmarks.compare            # the full run (about 15 minutes)
    python -m benchmarks.compare --quick    # a few seconds per workload

Writes ``results.json`` (every figure), ``results.md`` (tables and goal ratios) and
PNG plots into ``--out`` (default ``benchmarks/compare/out``), and prints the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.compare import report, workloads
from benchmarks.compare.system import System
from benchmarks.compare.workloads import Plan, progress

SYSTEMS = ("hacoord", "etcd", "pysyncobj")


def make_system(name: str) -> System:
    """The driver of one system (installing what it needs)."""
    if name == "hacoord":
        from benchmarks.compare.hacoord_system import HacoordSystem

        return HacoordSystem()
    if name == "etcd":
        from benchmarks.compare.etcd_system import EtcdSystem, ensure_etcd

        ensure_etcd()
        return EtcdSystem()
    if name == "pysyncobj":
        from benchmarks.compare.pysyncobj_system import PySyncObjSystem, ensure_pysyncobj

        ensure_pysyncobj()
        return PySyncObjSystem()
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")


async def run_system(name: str, plan: Plan, election_timeout_ms: int, base: Path) -> dict[str, Any]:
    """Every workload against one system, failover last (it kills members)."""
    system = make_system(name)
    progress(name, "starting 3 members")
    await system.start(base / name, election_timeout_ms)
    out: dict[str, Any] = {}
    try:
        out["serial"] = await workloads.serial_latency(system, plan)
        out["throughput"] = await workloads.throughput(system, plan)
        out["reads"] = await workloads.reads(system, plan)
        if system.supports_leases:
            out["leases"] = await workloads.leases(system, plan)
        out["failover"] = await workloads.failover(system, plan, election_timeout_ms)
    finally:
        await system.stop()
    rate = await system.embedded_rate(plan.embedded_s, base / f"{name}-embedded")
    if rate is not None:
        out["embedded_ops_per_s"] = round(rate, 1)
        progress(name, f"embedded {rate:.0f} ops/s")
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen systems one after another; return every figure."""
    plan = Plan.quick() if args.quick else Plan()
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "quick": args.quick,
        "election_timeout_ms": args.election_timeout_ms,
        "plan": dataclasses.asdict(plan),
        "systems": {},
    }
    with tempfile.TemporaryDirectory(prefix="hacoord-compare-") as tmp:
        for name in args.systems.split(","):
            results["systems"][name] = await run_system(
                name, plan, args.election_timeout_ms, Path(tmp)
            )
    results["goals"] = report.goals(results)
    return results


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a few seconds per workload")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma separated subset")
    p.add_argument("--election-timeout-ms", type=int, default=300)
    p.add_argument("--out", default=str(Path(__file__).parent / "out"), help="output directory")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = p.parse_args(argv)
    for name in args.systems.split(","):
        if name not in SYSTEMS:
            p.error(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    results = asyncio.run(main_async(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    (out / "results.md").write_text(report.markdown(results))
    if not args.no_plots:
        for path in report.plots(results, out):
            progress("report", f"wrote {path}")
    summary = {k: v for k, v in results.items() if k != "systems"}
    summary["out"] = str(out)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
