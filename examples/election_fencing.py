"""Leader election with fencing tokens against a local three-member cluster.

    python examples/election_fencing.py

Starts three ``hacoord serve`` processes on 127.0.0.1, lets two services ("db-a" and
"db-b") campaign for the same election, shows that the holder's fenced writes
succeed while a former holder's are refused, kills the cluster's Raft leader while
"db-b" holds the election (its lease survives the failover), and checks at a
``FencedResource`` that the tokens only ever grow.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import hacoord
from hacoord.coord import FencedResource, FencingTokenError, Put
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster


async def main(base: Path) -> None:
    cluster = LocalCluster(base, n=3, timing=Timing(heartbeat_ms=50, election_timeout_ms=500))
    cluster.start()
    database = FencedResource("orders-db")  # stands in for a real resource's fence table
    try:
        await cluster.wait_for_leader()
        async with (
            hacoord.connect(cluster.endpoints()) as service_a,
            hacoord.connect(cluster.endpoints()) as service_b,
        ):
            a = await service_a.election("orders").acquire(b"db-a", ttl_s=3)
            print(f"db-a elected with fencing token {a.token}")
            database.accept(a.token)
            b_waiting = asyncio.create_task(service_b.election("orders").acquire(b"db-b", 3))
            await a.fenced(Put("orders/primary", b"db-a"))
            print("db-a resigns; db-b takes over")
            await a.resign()
            b = await b_waiting
            print(f"db-b elected with fencing token {b.token} (> {a.token})")
            database.accept(b.token)
            late = await a.fenced(Put("orders/primary", b"db-a (late)"))
            print(f"db-a's late write inside the cluster applied: {late.succeeded}")
            try:
                database.accept(a.token)
            except FencingTokenError as exc:
                print(f"db-a's late action at the resource refused: {exc}")
            leader = await cluster.wait_for_leader()
            print(f"killing the cluster's Raft leader (member {leader}) while db-b holds")
            cluster.kill(leader)
            new_leader = await cluster.wait_for_leader(exclude={leader})
            print(f"member {new_leader} leads now")
            cluster.start(leader)
            ok = await b.fenced(Put("orders/primary", b"db-b"))
            print(f"db-b still holds after the failover: {ok.succeeded and not b.is_lost}")
            primary = await service_b.get("orders/primary")
            assert primary is not None
            print(f"orders/primary = {primary.value.decode()} (token {b.token})")
            await b.resign()
    finally:
        await cluster.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="hacoord-election-") as tmp:
        asyncio.run(main(Path(tmp)))
