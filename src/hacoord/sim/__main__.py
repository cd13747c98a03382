"""Command line of the deterministic simulator.

``python -m hacoord.sim --seeds 300`` runs seeds 0..299 with faults on and prints
one JSON line; on a violation it prints the seed, what broke and the command that
replays exactly that run, and exits 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Iterator, Sequence

from hacoord.sim.cluster import SimConfig, SimResult, Simulation


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m hacoord.sim",
        description="Run seeded, fault-injecting simulations of a hacoord Raft cluster.",
    )
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--nodes", type=int, choices=(3, 5), default=3, help="cluster size")
    p.add_argument("--duration-ms", type=float, default=4000.0, help="virtual time per seed")
    p.add_argument("--no-faults", action="store_true", help="run without fault injection")
    p.add_argument("--no-pre-vote", action="store_true", help="disable PreVote")
    p.add_argument("--no-check-quorum", action="store_true", help="disable CheckQuorum")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--verbose", action="store_true", help="print one line per seed")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    if args.duration_ms < 2000:
        p.error("--duration-ms must be >= 2000 (the last 1500 ms are a fault-free settle window)")
    return args


def _config(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        nodes=args.nodes,
        duration_ms=args.duration_ms,
        faults=not args.no_faults,
        pre_vote=not args.no_pre_vote,
        check_quorum=not args.no_check_quorum,
    )


def _run_one(job: tuple[int, argparse.Namespace]) -> SimResult:
    seed, args = job
    try:
        return Simulation(seed, _config(args)).run()
    except Exception as exc:  # a crash is a failure of this seed, with its replay line
        return SimResult(seed, [f"simulator crashed: {exc!r}"], 0, 0, 0, 0)


def replay_command(seed: int, args: argparse.Namespace) -> str:
    """The one-line command that reruns exactly ``seed`` with the same options."""
    parts = [f"python -m hacoord.sim --seeds 1 --start {seed} --nodes {args.nodes}"]
    if args.duration_ms != 4000.0:
        parts.append(f"--duration-ms {args.duration_ms:g}")
    for flag in ("no_faults", "no_pre_vote", "no_check_quorum"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    return " ".join([*parts, "--verbose"])


def _results(args: argparse.Namespace) -> Iterator[SimResult]:
    jobs = [(seed, args) for seed in range(args.start, args.start + args.seeds)]
    if args.jobs == 1:
        yield from map(_run_one, jobs)
        return
    with multiprocessing.Pool(args.jobs) as pool:
        yield from pool.imap(_run_one, jobs, chunksize=8)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parse(argv)
    started = time.monotonic()
    totals = {"seeds": 0, "violations": 0, "elections": 0, "ops_checked": 0, "committed": 0}
    failed: list[SimResult] = []
    for result in _results(args):
        totals["seeds"] += 1
        totals["elections"] += result.elections
        totals["ops_checked"] += result.ops_checked
        totals["committed"] += result.committed
        if args.verbose:
            print(
                f"seed {result.seed}: elections={result.elections} committed={result.committed} "
                f"ops_checked={result.ops_checked} events={result.events} "
                f"violations={len(result.violations)}",
                file=sys.stderr,
            )
        if result.violations:
            totals["violations"] += 1
            failed.append(result)
            print(f"VIOLATION seed {result.seed}:", file=sys.stderr)
            for text in result.violations:
                print(f"  {text}", file=sys.stderr)
            print(f"  replay: {replay_command(result.seed, args)}", file=sys.stderr)
    summary: dict[str, object] = dict(totals)
    summary["nodes"] = args.nodes
    summary["start"] = args.start
    summary["seconds"] = round(time.monotonic() - started, 2)
    if failed:
        summary["failed_seeds"] = [r.seed for r in failed[:20]]
    print(json.dumps(summary), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
