"""``hacoord demo``: a local cluster of real processes showing election, failover, fencing."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import hacoord
from hacoord.coord import FencedResource, FencingTokenError, Put
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo(nodes: int, election_timeout_ms: float, directory: str | None) -> int:
    """Start ``nodes`` members, elect a service, kill the Raft leader, fence, rejoin."""
    timing = Timing(heartbeat_ms=election_timeout_ms / 6, election_timeout_ms=election_timeout_ms)
    with tempfile.TemporaryDirectory(prefix="hacoord-demo-") as tmp:
        base = Path(directory) if directory else Path(tmp)
        cluster = LocalCluster(base, n=nodes, timing=timing, cluster_id="demo")
        try:
            return await _script(cluster, election_timeout_ms)
        finally:
            await cluster.close()
            _say(f"cluster stopped; member logs were in {base}")


async def _script(cluster: LocalCluster, election_timeout_ms: float) -> int:
    _say(f"starting {cluster.n} members on 127.0.0.1 (election timeout {election_timeout_ms:g} ms)")
    started = time.monotonic()
    cluster.start()
    for nid, m in sorted(cluster.members.items()):
        _say(f"  member {nid}: pid {cluster.procs[nid].pid}, raft {m.raft[1]}, http {m.http[1]}")
    leader = await cluster.wait_for_leader()
    st = await cluster.status(leader)
    term = st["term"] if st else "?"
    _say(f"member {leader} elected leader of term {term} after {time.monotonic() - started:.2f} s")

    async with (
        hacoord.connect(cluster.endpoints()) as orders_a,
        hacoord.connect(cluster.endpoints()) as orders_b,
    ):
        database = FencedResource("orders-db")
        a = await orders_a.election("orders").acquire(b"service-a", ttl_s=3)
        database.accept(a.token)
        _say(f"service-a won election 'orders' with fencing token {a.token}")
        b_waiting = asyncio.create_task(orders_b.election("orders").acquire(b"service-b", 3))
        for i in range(3):
            res = await cluster.put(f"greeting{i}", f"hello {i}")
            _say(f"  wrote greeting{i} through member {res.leader} at revision {res.index}")

        _say(f"SIGKILL the Raft leader, member {leader}")
        killed_at = time.monotonic()
        cluster.kill(leader)
        res = await cluster.put("after-failover", "still writable")
        failover_s = time.monotonic() - killed_at
        new_st = await cluster.status(res.leader)
        new_term = new_st["term"] if new_st else "?"
        _say(
            f"member {res.leader} took over in term {new_term}: first write committed "
            f"{failover_s * 1000:.0f} ms after the kill (revision {res.index})"
        )
        value = await cluster.get(res.leader, "greeting2")
        _say(f"  greeting2 survived the failover: {value!r}")
        still = (await a.fenced(Put("orders/primary", b"service-a"))).succeeded
        _say(f"  service-a kept its leadership (and lease) across the failover: {still}")

        _say("service-a stops renewing its lease, as a hung process would")
        await a.lease.stop()
        await a.lost()
        _say("  service-a's lost() fired: it stops acting as the primary")
        b = await b_waiting
        database.accept(b.token)
        _say(f"service-b elected with fencing token {b.token} (> {a.token})")
        late = (await a.fenced(Put("orders/primary", b"service-a (late)"))).succeeded
        _say(f"  service-a's late write inside the cluster applied: {late}")
        try:
            database.accept(a.token)
            fenced = False
        except FencingTokenError as exc:
            fenced = True
            _say(f"  service-a's late action at the database refused: {exc}")
        await b.resign()

    _say(f"restarting member {leader}")
    cluster.start(leader)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = await cluster.status(leader)
        if st and st["applied_index"] >= res.index:
            _say(
                f"  member {leader} rejoined as {st['role']} of term {st['term']} and caught "
                f"up to index {st['applied_index']}"
            )
            break
        await asyncio.sleep(0.05)
    else:
        _say(f"  member {leader} did not catch up within 20 s")
        return 1
    ok = still and not late and fenced and b.token > a.token
    _say("election, failover and fencing: " + ("ok" if ok else "BROKEN"))
    return 0 if ok else 1
