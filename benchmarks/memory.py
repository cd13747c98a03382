"""Memory and snapshot cost of a member holding a large state.

    python -m benchmarks.memory                      # 1 M keys, 10 k leases (about 2 min)
    python -m benchmarks.memory --keys 20000 --leases 200     (the smoke test)

One member (a single-voter cluster, fsync on, in a temporary directory) runs in this
process and is loaded through its log: ``--leases`` lease grants, then ``--keys`` puts
in transactions of 1,000 (every tenth key on a lease, ten keys per lease), keys of
about 22 bytes and values of ``--value-bytes``. Prints one JSON object:

* ``raw_bytes``: the bytes of every key and value (what a user stored);
* ``rss_empty_bytes``, ``rss_loaded_bytes``: the process's resident set before the load
  and after it (after a snapshot and log compaction, with a full garbage collection);
  ``rss_ratio`` is the growth over ``raw_bytes`` (goal: under 2);
* ``snapshot_s`` (capture, serialize on a thread, write, compact), ``snapshot_bytes``
  and ``loop_stall_ms``: the longest the event loop went without running during it
  (a 1 ms ticker), which is what heartbeats and replication see;
* ``serialize_on_loop_s``: the same snapshot made on the event loop, what every member
  stalled for before snapshots moved to a thread;
* ``restore_s``: a fresh state machine loading that snapshot (a follower installing it),
  and ``restart_s``: opening the member again from its directory.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from hacoord.coord.commands import LeaseGrant, Put, Request, Txn, encode_request
from hacoord.raft.node import RaftNode
from hacoord.server.in_process import in_process_member
from hacoord.server.local_cluster import free_ports
from hacoord.server.state import ServerStateMachine

TXN_KEYS = 1_000
KEYS_PER_LEASE = 10


def rss_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss() -> int:
    """The resident set after a full collection (freed temporaries do not count)."""
    gc.collect()
    return rss_bytes()


def key_of(i: int) -> str:
    return f"/bench/keys/{i:010d}"


def _member(data_dir: Path, port: int) -> tuple[RaftNode, ServerStateMachine]:
    sm = ServerStateMachine()
    node = in_process_member(
        1, {1: ("127.0.0.1", port)}, data_dir, sm, cluster_id="memory", snapshot_entries=10**9
    )
    return node, sm


async def load(node: RaftNode, keys: int, leases: int, value_bytes: int) -> int:
    """Grant the leases and put the keys through the log; returns the raw bytes stored."""
    grants = [encode_request(Request(LeaseGrant(3_600_000))) for _ in range(leases)]
    lease_ids: list[int] = []
    for start in range(0, len(grants), 1_000):
        futures = await node.propose_many(grants[start : start + 1_000])
        lease_ids += [(await f).lease_id for f in futures]
    raw = 0
    for start in range(0, keys, TXN_KEYS):
        ops = []
        for i in range(start, min(start + TXN_KEYS, keys)):
            key = key_of(i)
            value = b"%0*d" % (value_bytes, i)
            on_lease = lease_ids and i % KEYS_PER_LEASE == 0
            lease = lease_ids[(i // KEYS_PER_LEASE) % len(lease_ids)] if on_lease else 0
            ops.append(Put(key, value, lease))
            raw += len(key.encode()) + len(value)
        await node.propose(encode_request(Request(Txn((), tuple(ops), ()))))
    return raw


async def timed_snapshot(node: RaftNode) -> tuple[float, float]:
    """Seconds a snapshot took, and the longest gap of a 1 ms ticker meanwhile (ms)."""
    longest = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    await node.take_snapshot()
    took = time.perf_counter() - started
    done = True
    await ticking
    return took, longest * 1000


async def run(keys: int, leases: int, value_bytes: int) -> dict[str, Any]:
    """Load a member, snapshot it, restore and reopen it; every figure."""
    with tempfile.TemporaryDirectory(prefix="hacoord-memory-") as tmp:
        data_dir = Path(tmp)
        port = free_ports(1)[0]
        node, sm = _member(data_dir, port)
        await node.start()
        try:
            await node.wait_for_leader(10)
            rss_empty = settled_rss()
            started = time.perf_counter()
            raw = await load(node, keys, leases, value_bytes)
            load_s = time.perf_counter() - started
            snapshot_s, stall_ms = await timed_snapshot(node)
            snapshot_bytes = node.metrics.snapshot_bytes
            rss_loaded = settled_rss()
            started = time.perf_counter()
            data = sm.snapshot()
            serialize_on_loop_s = time.perf_counter() - started
            started = time.perf_counter()
            ServerStateMachine().restore(data)
            restore_s = time.perf_counter() - started
            del data
            stored = len(sm.store.keys)
            stored_leases = len(sm.leases.leases)
        finally:
            await node.stop()
        del node, sm
        gc.collect()
        started = time.perf_counter()
        again, again_sm = _member(data_dir, port)
        restart_s = time.perf_counter() - started
        reopened = len(again_sm.store.keys)
        await again.start()
        await again.stop()
    return {
        "keys": stored,
        "leases": stored_leases,
        "value_bytes": value_bytes,
        "load_s": round(load_s, 2),
        "raw_bytes": raw,
        "rss_empty_bytes": rss_empty,
        "rss_loaded_bytes": rss_loaded,
        "rss_ratio": round((rss_loaded - rss_empty) / raw, 2),
        "bytes_per_key": round((rss_loaded - rss_empty) / max(1, stored)),
        "snapshot_s": round(snapshot_s, 3),
        "snapshot_bytes": snapshot_bytes,
        "loop_stall_ms": round(stall_ms, 1),
        "serialize_on_loop_s": round(serialize_on_loop_s, 3),
        "restore_s": round(restore_s, 3),
        "restart_s": round(restart_s, 3),
        "keys_after_restart": reopened,
    }


def main() -> None:
    """Parse the command line, run, print the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--leases", type=int, default=10_000)
    parser.add_argument("--value-bytes", type=int, default=64)
    args = parser.parse_args()
    if args.keys < 1 or args.leases < 0 or args.value_bytes < 1:
        parser.error("--keys and --value-bytes must be >= 1, --leases >= 0")
    print(json.dumps(asyncio.run(run(args.keys, args.leases, args.value_bytes)), indent=2))


if __name__ == "__main__":
    main()
