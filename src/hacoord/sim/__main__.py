"""Command line of the deterministic simulator.

``python -m hacoord.sim --seeds 300`` runs seeds 0..299 with faults on and prints
one JSON line; on a violation it prints the seed, what broke and the command that
replays exactly that run, and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hacoord.sim.cluster import SimConfig, SimResult, Simulation
from hacoord.sim.seeds import add_seed_options, check_seed_options, run_and_report

COUNTS = ("elections", "ops_checked", "committed")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m hacoord.sim",
        description="Run seeded, fault-injecting simulations of a hacoord Raft cluster.",
    )
    add_seed_options(p)
    p.add_argument("--duration-ms", type=float, default=4000.0, help="virtual time per seed")
    p.add_argument("--no-faults", action="store_true", help="run without fault injection")
    p.add_argument("--no-pre-vote", action="store_true", help="disable PreVote")
    p.add_argument("--no-check-quorum", action="store_true", help="disable CheckQuorum")
    args = p.parse_args(argv)
    check_seed_options(p, args)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parse(argv)
    return run_and_report(_run_one, args, COUNTS, replay_command)


if __name__ == "__main__":
    sys.exit(main())
