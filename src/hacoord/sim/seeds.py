"""Running many seeds of a simulation and reporting them: shared by the simulators' CLIs.

A simulator's CLI supplies a function that runs one seed, the names of the counts to
total, and the replay command of a seed; :func:`run_and_report` runs the seeds (in
worker processes when ``jobs > 1``), prints every violation with its replay line to
stderr and one JSON summary line to stdout, and returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar


class SeedResult(Protocol):
    """What every simulator's per-seed result carries."""

    @property
    def seed(self) -> int:
        """The seed that was run."""
        ...

    @property
    def violations(self) -> list[str]:
        """What broke (empty: nothing)."""
        ...

    @property
    def events(self) -> int:
        """Events the run handled."""
        ...


R = TypeVar("R", bound=SeedResult)
Job = tuple[int, argparse.Namespace]


def add_seed_options(p: argparse.ArgumentParser) -> None:
    """The options every simulator CLI shares: which seeds, the cluster size, how many
    workers, verbosity."""
    p.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    p.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--nodes", type=int, choices=(3, 5), default=3, help="cluster size")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--verbose", action="store_true", help="print one line per seed")


def check_seed_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad values of the shared options with a clear message."""
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")


def _results(run_one: Callable[[Job], R], args: argparse.Namespace) -> Iterator[R]:
    jobs = [(seed, args) for seed in range(args.start, args.start + args.seeds)]
    if args.jobs == 1:
        yield from map(run_one, jobs)
        return
    with multiprocessing.Pool(args.jobs) as pool:
        yield from pool.imap(run_one, jobs, chunksize=8)


def run_and_report(
    run_one: Callable[[Job], R],
    args: argparse.Namespace,
    counts: tuple[str, ...],
    replay: Callable[[int, argparse.Namespace], str],
    extra: dict[str, object] | None = None,
) -> int:
    """Run ``args.seeds`` seeds from ``args.start``; 1 if any seed failed, else 0.

    ``run_one`` must be a module-level function (it is sent to worker processes);
    ``counts`` names integer attributes of the results, totalled in the summary.
    """
    started = time.monotonic()
    totals = dict.fromkeys(("seeds", "violations", *counts), 0)
    failed: list[int] = []
    for result in _results(run_one, args):
        totals["seeds"] += 1
        for name in counts:
            totals[name] += getattr(result, name)
        if args.verbose:
            line = " ".join(f"{name}={getattr(result, name)}" for name in counts)
            print(
                f"seed {result.seed}: {line} events={result.events} "
                f"violations={len(result.violations)}",
                file=sys.stderr,
            )
        if result.violations:
            totals["violations"] += 1
            failed.append(result.seed)
            print(f"VIOLATION seed {result.seed}:", file=sys.stderr)
            for text in result.violations:
                print(f"  {text}", file=sys.stderr)
            print(f"  replay: {replay(result.seed, args)}", file=sys.stderr)
    seconds = time.monotonic() - started
    summary: dict[str, object] = {**totals, "nodes": args.nodes, "start": args.start}
    summary.update(extra or {})
    summary["seconds"] = round(seconds, 2)
    summary["seeds_per_s"] = round(totals["seeds"] / max(seconds, 1e-9), 1)
    if failed:
        summary["failed_seeds"] = failed[:20]
    print(json.dumps(summary), flush=True)
    return 1 if failed else 0
