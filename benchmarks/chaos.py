"""Chaos run on real member processes: faults against KV, lease and election clients.

    python -m benchmarks.chaos --minutes 10 [--members 3|5] [--seed N]

A cluster of member processes runs with every peer link (i dials j) through a
:class:`~hacoord.testing.faultproxy.FaultProxy`. A fault loop, reproducible from
``--seed``, injects one fault at a time on a minority of members (SIGKILL and
restart, SIGSTOP then SIGCONT, a member isolated, one dialled link cut) and heals
it, while in this process:

* KV clients put, read and compare-and-set keys; the history goes through the
  simulator's linearizability checker (keys rotate every few seconds so that each
  key's sub-history stays small);
* lease keepers hold leases with the client library; since a majority is reachable
  throughout, every lease reported lost is spurious and is listed with its reason;
* candidates take turns in one election; each holder writes to a
  :class:`~hacoord.coord.FencedResource` with its token while ``is_lost`` is false.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hacoord
from hacoord.client import Client, UnavailableError
from hacoord.coord import Compare, CompareOp, FencedResource, FencingTokenError, Put, Target, Txn
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster
from hacoord.sim.linearizability import Operation, OpKind, check_history
from hacoord.testing.faultproxy import FaultProxy

KEY_EPOCH_S = 5.0
"""Each KV key is used for this long, then replaced by a fresh one."""
KEYS_PER_EPOCH = 4
KINDS = ("kill", "kill_leader", "stop", "isolate", "cut_link")


def _log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """Everything the clients and the fault loop record."""

    started: float = field(default_factory=time.monotonic)
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[tuple[float, float, str]] = field(default_factory=list)
    history: list[Operation] = field(default_factory=list)
    lease_losses: list[dict[str, Any]] = field(default_factory=list)
    terms: list[tuple[float, float, int, str]] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    refused: int = 0
    out_of_order: int = 0
    watchers: list[asyncio.Task[None]] = field(default_factory=list)

    def at(self) -> float:
        """Seconds since the run started."""
        return round(time.monotonic() - self.started, 3)


class Faults:
    """Injects one fault at a time on one member and heals it."""

    def __init__(
        self, cluster: LocalCluster, proxies: dict[tuple[int, int], FaultProxy], rng: random.Random
    ) -> None:
        self.cluster = cluster
        self.proxies = proxies
        self.rng = rng
        self._next: list[str] = []

    async def one(self, run: Run) -> None:
        """Pick a fault, hold it for a while, heal it, and wait until the cluster is whole."""
        c = self.cluster
        if not self._next:  # every kind once per round, in a random order
            self._next = list(KINDS)
            self.rng.shuffle(self._next)
        kind = self._next.pop()
        victim = await c.leader() if kind == "kill_leader" else 0
        victim = victim or self.rng.choice(list(c.members))
        hold = self.rng.uniform(0.3, 3.0)
        start = run.at()
        if kind in ("kill", "kill_leader"):
            c.kill(victim)
            await asyncio.sleep(hold)
            c.start(victim)
        elif kind == "stop":
            c.signal(victim, signal.SIGSTOP)
            await asyncio.sleep(hold)
            c.signal(victim, signal.SIGCONT)
        else:
            if kind == "isolate":
                links = [p for (i, j), p in self.proxies.items() if victim in (i, j)]
            else:
                other = self.rng.choice([m for m in c.members if m != victim])
                links = [self.proxies[(victim, other)]]
            for proxy in links:
                proxy.mode = "drop"
                await proxy.reset()
            await asyncio.sleep(hold)
            for proxy in links:
                proxy.mode = "pass"
                await proxy.reset()
        run.faults[kind] += 1
        run.fault_log.append((start, run.at(), f"{kind} {victim}"))
        await c.wait_in_sync(timeout=60)


async def _kv_client(cid: int, client: Client, stop: asyncio.Event, run: Run) -> None:
    rng = random.Random(cid)
    seen: dict[str, str] = {}
    for n in itertools.count():
        if stop.is_set():
            return
        epoch = int((time.monotonic() - run.started) / KEY_EPOCH_S)
        key = f"chaos/e{epoch}-k{rng.randrange(KEYS_PER_EPOCH)}"
        value = f"c{cid}-{n}"
        roll = rng.random()
        start = time.monotonic()
        try:
            if roll < 0.4:
                op = Operation(cid, OpKind.PUT, key, start, None, value=value)
                run.history.append(op)
                await client.put(key, value.encode())
            elif roll < 0.8:
                op = Operation(cid, OpKind.GET, key, start, None)
                run.history.append(op)
                kv = await client.get(key)
                op.value = kv.value.decode() if kv else None
                if op.value is not None:
                    seen[key] = op.value
            else:
                expected = seen.get(key) if rng.random() < 0.8 else None
                op = Operation(cid, OpKind.CAS, key, start, None, value=value, expected=expected)
                run.history.append(op)
                compare = (
                    Compare(key, Target.CREATE, CompareOp.EQUAL, 0)
                    if expected is None
                    else Compare(key, Target.VALUE, CompareOp.EQUAL, expected.encode())
                )
                txn = Txn(compares=(compare,), success=(Put(key, value.encode()),))
                op.ok = (await client.txn(txn)).succeeded
        except UnavailableError:
            continue  # outcome unknown: the checker treats the write as maybe applied
        op.complete = time.monotonic()


async def _lease_keepers(client: Client, count: int, ttl_s: float, run: Run) -> list[Any]:
    leases = await asyncio.gather(*(client.grant(ttl_s) for _ in range(count)))

    async def watch(lease: Any) -> None:
        await lease.lost()
        run.lease_losses.append({"lease": lease.id, "at_s": run.at(), "reason": lease.lost_reason})

    run.watchers = [asyncio.create_task(watch(lease)) for lease in leases]
    return leases


def _fenced_write(resource: FencedResource, token: int, run: Run) -> None:
    try:
        resource.accept(token)
    except FencingTokenError:
        run.refused += 1
        return
    if run.accepted and token < max(run.accepted):
        run.out_of_order += 1
    run.accepted.append(token)


async def _candidate(
    name: str, client: Client, stop: asyncio.Event, resource: FencedResource, run: Run
) -> None:
    """Hold the election for a while, writing with the token; then one late write."""
    rng = random.Random(name)
    election = client.election("chaos")
    while not stop.is_set():
        leadership = await election.acquire(name.encode(), ttl_s=3.0)
        elected = time.monotonic()
        until = elected + rng.uniform(0.2, 1.5)
        while time.monotonic() < until and not leadership.is_lost:
            _fenced_write(resource, leadership.token, run)
            await asyncio.sleep(0.05)
        # A lost lease ended at its deadline, perhaps before this loop noticed.
        ended = min(time.monotonic(), leadership.lease.deadline)
        run.terms.append((elected, ended, leadership.token, name))
        if leadership.is_lost:
            run.lease_losses.append(
                {"holder": name, "at_s": run.at(), "reason": leadership.lease.lost_reason}
            )
        with contextlib.suppress(Exception):
            await leadership.resign()
        if rng.random() < 0.5:
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            _fenced_write(resource, leadership.token, run)  # a stale holder's late action


def _elections_report(run: Run) -> dict[str, Any]:
    terms = sorted(run.terms)
    tokens = [t[2] for t in terms]
    overlaps = sum(1 for a, b in itertools.pairwise(terms) if b[0] < a[1])
    return {
        "terms": len(terms),
        "tokens_strictly_increasing": tokens == sorted(set(tokens)),
        "overlapping_terms": overlaps,
        "fenced_writes_accepted": len(run.accepted),
        "fenced_writes_refused": run.refused,
        "out_of_order_accepted": run.out_of_order,
    }


def _with_faults_before(loss: dict[str, Any], run: Run, ttl_s: float) -> dict[str, Any]:
    """A lease loss with the faults that overlapped the TTL before it (to explain it)."""
    since = loss["at_s"] - ttl_s - 1.0
    nearby = [
        f"{what} {start:.1f}-{end:.1f} s"
        for start, end, what in run.fault_log
        if end >= since and start <= loss["at_s"]
    ]
    return {**loss, "faults_before": nearby}


async def chaos(duration_s: float, members: int, seed: int, ttl_s: float) -> dict[str, Any]:
    """Run the chaos benchmark for ``duration_s`` and return its report."""
    rng = random.Random(seed)
    timing = Timing(heartbeat_ms=30, election_timeout_ms=300)
    with tempfile.TemporaryDirectory(prefix="hacoord-chaos-") as tmp:
        cluster = LocalCluster(Path(tmp), n=members, timing=timing, log_level="WARNING")
        proxies: dict[tuple[int, int], FaultProxy] = {}
        run = Run()
        stop = asyncio.Event()
        try:
            for i, j in itertools.permutations(cluster.members, 2):
                proxy = FaultProxy(cluster.members[j].raft)
                await proxy.start()
                proxies[(i, j)] = proxy
                cluster.peer_addresses[(i, j)] = ("127.0.0.1", proxy.port)
            cluster.start()
            await cluster.wait_in_sync(timeout=60)
            async with contextlib.AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(hacoord.connect(cluster.endpoints()))
                    for _ in range(6)
                ]
                leases = await _lease_keepers(clients[0], 20, ttl_s, run)
                resource = FencedResource("chaos")
                tasks = [
                    asyncio.create_task(_kv_client(i, clients[i], stop, run)) for i in (1, 2, 3)
                ]
                tasks += [
                    asyncio.create_task(_candidate(n, clients[k], stop, resource, run))
                    for n, k in (("a", 4), ("b", 5), ("c", 0))
                ]
                faults = Faults(cluster, proxies, rng)
                end = time.monotonic() + duration_s
                while time.monotonic() < end or len(run.faults) < len(KINDS):
                    await faults.one(run)
                    await asyncio.sleep(rng.uniform(0.2, 1.0))
                    for task in tasks:
                        if task.done():
                            task.result()  # a client that died ends the run with its error
                    _log(f"{run.at():.0f} s: {dict(run.faults)}, {len(run.history)} kv ops")
                stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
                for watcher in run.watchers:
                    watcher.cancel()
                still_alive = sum(1 for lease in leases if not lease.is_lost)
        finally:
            stop.set()
            await cluster.close()
            for proxy in proxies.values():
                await proxy.close()
    verdict = check_history(run.history)
    completed = [op for op in run.history if op.complete is not None]
    return {
        "members": members,
        "seed": seed,
        "duration_s": run.at(),
        "faults": dict(run.faults),
        "kv": {
            "ops": len(run.history),
            "completed": len(completed),
            "unknown": len(run.history) - len(completed),
            "linearizable": verdict.ok,
            "explanation": verdict.explanation,
        },
        "leases": {
            "count": len(leases),
            "ttl_s": ttl_s,
            "alive_at_end": still_alive,
            "spurious_losses": len(run.lease_losses),
            "losses": [_with_faults_before(loss, run, ttl_s) for loss in run.lease_losses],
        },
        "elections": _elections_report(run),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print the JSON report; exit 1 if a property failed."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="how long to inject faults")
    length.add_argument("--seconds", type=float, help="the same in seconds (smoke runs)")
    p.add_argument("--members", type=int, choices=(3, 5), default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ttl", type=float, default=3.0, help="lease TTL in seconds (default 3)")
    args = p.parse_args(argv)
    duration = args.seconds if args.seconds is not None else 60 * (args.minutes or 1)
    if duration <= 0:
        p.error("the duration must be positive")
    report = asyncio.run(chaos(duration, args.members, args.seed, args.ttl))
    print(json.dumps(report, indent=2))
    e = report["elections"]
    healthy = (
        report["kv"]["linearizable"]
        and report["leases"]["spurious_losses"] == 0
        and e["tokens_strictly_increasing"]
        and e["overlapping_terms"] == 0
        and e["out_of_order_accepted"] == 0
    )
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
