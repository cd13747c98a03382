"""Linearizability of the coordination KV against real member processes.

Five clients put, read and compare-and-set three keys through the network client
while the cluster leader is SIGKILLed and restarted; the recorded history goes
through the simulator's checker.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import hacoord
from hacoord.client import Client, UnavailableError
from hacoord.coord import Compare, CompareOp, Put, Target, Txn
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster
from hacoord.sim.linearizability import Operation, OpKind, check_history

KEYS = ["k0", "k1", "k2"]


def _cas(key: str, expected: str | None, new: str) -> Txn:
    compare = (
        Compare(key, Target.CREATE, CompareOp.EQUAL, 0)
        if expected is None
        else Compare(key, Target.VALUE, CompareOp.EQUAL, expected.encode())
    )
    return Txn(compares=(compare,), success=(Put(key, new.encode()),))


async def _client_loop(
    cid: int, c: Client, stop: asyncio.Event, history: list[Operation], seen: dict[str, str]
) -> None:
    rng = random.Random(cid)
    n = 0
    while not stop.is_set():
        n += 1
        key = rng.choice(KEYS)
        roll = rng.random()
        value = f"c{cid}-{n}"
        start = time.monotonic()
        if roll < 0.4:
            op = Operation(cid, OpKind.PUT, key, start, None, value=value)
            history.append(op)
            try:
                await c.put(key, value.encode())
            except UnavailableError:
                continue
        elif roll < 0.8:
            op = Operation(cid, OpKind.GET, key, start, None)
            history.append(op)
            try:
                kv = await c.get(key)
            except UnavailableError:
                continue
            op.value = kv.value.decode() if kv else None
            if op.value is not None:
                seen[key] = op.value
        else:
            expected = seen.get(key) if rng.random() < 0.8 else None
            op = Operation(cid, OpKind.CAS, key, start, None, value=value, expected=expected)
            history.append(op)
            try:
                op.ok = (await c.txn(_cas(key, expected, value))).succeeded
            except UnavailableError:
                continue
        op.complete = time.monotonic()


async def test_kv_history_is_linearizable_across_leader_kills(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, n=3, timing=Timing(heartbeat_ms=30, election_timeout_ms=300))
    cluster.start()
    history: list[Operation] = []
    seen: dict[str, str] = {}
    stop = asyncio.Event()
    try:
        await cluster.wait_for_leader()
        async with hacoord.connect(cluster.endpoints(), deadline_s=5) as c:
            tasks = [
                asyncio.create_task(_client_loop(i + 1, c, stop, history, seen)) for i in range(5)
            ]
            for _ in range(3):
                done_before = sum(op.complete is not None for op in history)
                while sum(op.complete is not None for op in history) < done_before + 60:
                    await asyncio.sleep(0.1)
                leader = await cluster.wait_for_leader()
                cluster.kill(leader)
                await cluster.wait_for_leader(exclude={leader})
                cluster.start(leader)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        await cluster.close()
    completed = [op for op in history if op.complete is not None]
    assert len(completed) >= 180
    assert {op.kind for op in completed} == {OpKind.PUT, OpKind.GET, OpKind.CAS}
    result = check_history(history)
    assert result.ok, f"{result.key}: {result.explanation}"
