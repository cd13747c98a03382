"""Failover time of a 3-process cluster: SIGKILL the leader, time the first new commit.

    python benchmarks/failover.py --kills 30 --election-timeout-ms 150
    python -m benchmarks.failover --kills 3          (the smoke test, a few seconds)

Prints one JSON object: p50/p99/max of "leader killed -> a new write is committed"
in milliseconds, and the same as multiples of the election timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[rank]


async def _first_commit_after(cluster: LocalCluster, key: str, deadline_s: float) -> float:
    """Hammer every running member with the same write until one acknowledges it."""
    session = cluster.http()
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for nid in cluster.running():
            try:
                async with session.put(cluster.url(nid, f"/v1/kv/{key}"), data=b"x") as resp:
                    if resp.status == 200:
                        return time.monotonic()
            except (aiohttp.ClientError, TimeoutError):
                pass
        await asyncio.sleep(0.002)
    raise TimeoutError(f"no write committed within {deadline_s}s")


async def _caught_up(cluster: LocalCluster, nid: int, leader: int) -> None:
    """Poll until ``nid`` follows ``leader`` and has applied the leader's commit index."""
    while True:
        a, b = await cluster.status(nid), await cluster.status(leader)
        if a and b and a["applied_index"] >= b["commit_index"] and a["leader"] == leader:
            return
        await asyncio.sleep(0.02)


async def run(kills: int, election_timeout_ms: float, heartbeat_ms: float) -> dict[str, object]:
    """Run the benchmark and return its figures."""
    timing = Timing(heartbeat_ms=heartbeat_ms, election_timeout_ms=election_timeout_ms)
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hacoord-failover-") as tmp:
        cluster = LocalCluster(Path(tmp), n=3, timing=timing, log_level="WARNING")
        cluster.start()
        try:
            leader = await cluster.wait_for_leader()
            await cluster.put("warmup", "1")
            for k in range(kills):
                killed_at = time.monotonic()
                cluster.kill(leader)
                committed_at = await _first_commit_after(cluster, f"k{k}", 30)
                samples.append((committed_at - killed_at) * 1000)
                print(f"kill {k + 1}/{kills}: {samples[-1]:.0f} ms", file=sys.stderr)
                cluster.start(leader)
                new_leader = await cluster.wait_for_leader(exclude={leader})
                await asyncio.wait_for(_caught_up(cluster, leader, new_leader), 30)
                leader = new_leader
        finally:
            await cluster.close()
    p50, p99, worst = (
        statistics.median(samples),
        _percentile(samples, 0.99),
        max(samples),
    )
    return {
        "benchmark": "failover",
        "kills": kills,
        "election_timeout_ms": election_timeout_ms,
        "heartbeat_ms": heartbeat_ms,
        "failover_ms": {"p50": round(p50, 1), "p99": round(p99, 1), "max": round(worst, 1)},
        "x_election_timeout": {
            "p50": round(p50 / election_timeout_ms, 2),
            "p99": round(p99 / election_timeout_ms, 2),
            "max": round(worst / election_timeout_ms, 2),
        },
        "samples_ms": [round(s, 1) for s in samples],
    }


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--election-timeout-ms", type=float, default=150.0)
    p.add_argument("--heartbeat-ms", type=float, default=None, help="default: timeout / 5")
    args = p.parse_args()
    if args.kills < 1:
        p.error("--kills must be >= 1")
    heartbeat = args.election_timeout_ms / 5 if args.heartbeat_ms is None else args.heartbeat_ms
    print(json.dumps(asyncio.run(run(args.kills, args.election_timeout_ms, heartbeat))))


if __name__ == "__main__":
    main()
