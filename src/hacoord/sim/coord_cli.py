"""Command line of the coordination simulator (``python -m hacoord.sim.coord``).

``python -m hacoord.sim.coord --seeds 2000 --jobs 2`` runs seeds 0..1999 with faults
on and prints one JSON line; on a violation it prints the seed, what broke and the
command that replays exactly that run, and exits 1. ``--plant NAME`` plants one of
the deliberate bugs of :mod:`hacoord.sim.coord_bugs`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from hacoord.sim.coord import CoordSimConfig, CoordSimResult, CoordSimulation
from hacoord.sim.coord_bugs import BUGS
from hacoord.sim.seeds import add_seed_options, check_seed_options, run_and_report

COUNTS = ("elections", "holders", "expiries", "fenced_writes", "clean_windows")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m hacoord.sim.coord",
        description="Run seeded, fault-injecting simulations of hacoord's leases and elections.",
    )
    add_seed_options(p)
    p.add_argument("--duration-ms", type=float, default=6000.0, help="virtual time per seed")
    p.add_argument("--no-faults", action="store_true", help="run without fault injection")
    p.add_argument(
        "--attempt-timeout-ms",
        type=float,
        default=5000.0,
        help="the longest a client waits on one member (default 5000, as HttpTransport; "
        "an attempt also takes at most a third of the call's budget)",
    )
    p.add_argument("--plant", action="append", choices=BUGS, default=[], help="plant a bug")
    args = p.parse_args(argv)
    check_seed_options(p, args)
    if args.duration_ms < 3000:
        p.error("--duration-ms must be >= 3000 (the last 1500 ms are a fault-free settle window)")
    if args.attempt_timeout_ms <= 0:
        p.error("--attempt-timeout-ms must be > 0")
    return args


def _config(args: argparse.Namespace) -> CoordSimConfig:
    base = CoordSimConfig()
    raft = dataclasses.replace(
        base.raft, nodes=args.nodes, duration_ms=args.duration_ms, faults=not args.no_faults
    )
    return dataclasses.replace(
        base,
        raft=raft,
        attempt_timeout_ms=args.attempt_timeout_ms,
        bugs=frozenset(args.plant),
    )


def _run_one(job: tuple[int, argparse.Namespace]) -> CoordSimResult:
    seed, args = job
    try:
        return CoordSimulation(seed, _config(args)).run()
    except Exception as exc:  # a crash is a failure of this seed, with its replay line
        return CoordSimResult(seed, [f"simulator crashed: {exc!r}"], 0, 0, 0, 0, 0, 0)


def replay_command(seed: int, args: argparse.Namespace) -> str:
    """The one-line command that reruns exactly ``seed`` with the same options."""
    parts = [f"python -m hacoord.sim.coord --seeds 1 --start {seed} --nodes {args.nodes}"]
    if args.duration_ms != 6000.0:
        parts.append(f"--duration-ms {args.duration_ms:g}")
    if args.no_faults:
        parts.append("--no-faults")
    if args.attempt_timeout_ms != 5000.0:
        parts.append(f"--attempt-timeout-ms {args.attempt_timeout_ms:g}")
    parts.extend(f"--plant {name}" for name in args.plant)
    return " ".join([*parts, "--verbose"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parse(argv)
    extra: dict[str, object] = {"planted": sorted(args.plant)} if args.plant else {}
    return run_and_report(_run_one, args, COUNTS, replay_command, extra)


if __name__ == "__main__":
    sys.exit(main())
