"""Embed hacoord in a service: three members in one process, replicating a counter.

    python examples/embedded_cluster.py

Each member is a ``RaftNode`` with its own data directory and TCP transport on
127.0.0.1. The script waits for a leader, increments the replicated counter through
it, reads it back linearizably from a follower, stops the leader (which hands
leadership over first) and keeps counting through the new leader.
"""

from __future__ import annotations

import asyncio
import random
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from hacoord.raft.node import NodeConfig, RaftNode, Transport
from hacoord.raft.timing import Timing
from hacoord.raft.types import Entry, Message, NodeId
from hacoord.transport.tcp import TcpTransport


class Counter:
    """The replicated state machine: one integer, incremented by each entry's value."""

    def __init__(self) -> None:
        self.value = 0

    def apply(self, entry: Entry) -> int:
        self.value += int(entry.data)
        return self.value

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes) -> None:
        self.value = int(data or b"0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def main() -> None:
    addresses = {i: ("127.0.0.1", free_port()) for i in (1, 2, 3)}
    counters = {i: Counter() for i in addresses}
    nodes: dict[int, RaftNode] = {}
    with tempfile.TemporaryDirectory(prefix="hacoord-embedded-") as tmp:
        for nid, addr in addresses.items():

            def transport(
                on_messages: Callable[[list[Message]], None],
                on_unreachable: Callable[[NodeId], None],
                nid: int = nid,
                addr: tuple[str, int] = addr,
            ) -> Transport:
                peers = {p: a for p, a in addresses.items() if p != nid}
                return TcpTransport(
                    nid, "embedded-demo", addr, peers, on_messages, on_unreachable=on_unreachable
                )

            config = NodeConfig(
                node_id=nid,
                cluster_id="embedded-demo",
                data_dir=Path(tmp) / f"member{nid}",
                voters=frozenset(addresses),
                timing=Timing(heartbeat_ms=30, election_timeout_ms=300),
            )
            nodes[nid] = RaftNode(config, counters[nid], transport, rng=random.Random(nid))
        for node in nodes.values():
            await node.start()

        leader = await nodes[1].wait_for_leader(timeout=10)
        print(f"member {leader} leads term {nodes[leader].core.term}")
        for step in (1, 2, 3):
            total = await nodes[leader].propose(str(step).encode())
            print(f"  +{step} -> counter {total} (applied through member {leader})")

        follower = next(n for n in nodes if n != leader)
        await nodes[follower].read_index()
        print(f"linearizable read on member {follower}: counter {counters[follower].value}")

        await nodes[leader].stop(transfer=True)
        survivors = {n: node for n, node in nodes.items() if n != leader}
        new_leader = await next(iter(survivors.values())).wait_for_leader(timeout=10)
        print(f"member {leader} stopped; member {new_leader} took over")
        total = await nodes[new_leader].propose(b"10")
        print(f"  +10 -> counter {total} (applied through member {new_leader})")
        for node in survivors.values():
            await node.stop(transfer=False)
        assert total == 16, total
        print("done: every increment was applied exactly once, in order")


if __name__ == "__main__":
    asyncio.run(main())
