"""A member far behind catches up from a snapshot sent in chunks, over real TCP."""

from __future__ import annotations

from pathlib import Path

from hacoord.coord.commands import Put, Request, encode_request
from hacoord.raft.node import RaftNode
from hacoord.raft.timing import Timing
from hacoord.server.in_process import in_process_member
from hacoord.server.local_cluster import free_ports
from hacoord.server.state import ServerStateMachine


def _node(
    nid: int, addrs: dict[int, tuple[str, int]], data: Path, kv: ServerStateMachine
) -> RaftNode:
    return in_process_member(
        nid,
        addrs,
        data,
        kv,
        cluster_id="chunks",
        timing=Timing(heartbeat_ms=30, election_timeout_ms=300),
        snapshot_entries=50,
        snapshot_chunk_bytes=4096,
    )


async def test_laggard_installs_a_chunked_snapshot(tmp_path: Path) -> None:
    ports = free_ports(3)
    addrs = {i + 1: ("127.0.0.1", ports[i]) for i in range(3)}
    kvs = {i: ServerStateMachine() for i in addrs}
    nodes = {i: _node(i, addrs, tmp_path, kvs[i]) for i in addrs}
    for n in nodes.values():
        await n.start()
    try:
        leader = await nodes[1].wait_for_leader(10)
        laggard = next(i for i in addrs if i != leader)
        await nodes[laggard].stop(transfer=False)
        for i in range(300):
            await nodes[leader].propose(
                encode_request(Request(Put(f"k{i}", bytes([i % 256]) * 200)))
            )
        assert nodes[leader].core.log.snapshot_index > 0
        kvs[laggard] = ServerStateMachine()
        nodes[laggard] = _node(laggard, addrs, tmp_path, kvs[laggard])
        await nodes[laggard].start()
        await nodes[laggard].wait_applied(nodes[leader].core.log.committed, timeout=20)
        assert nodes[laggard].core.log.snapshot_index > 0, "caught up through a snapshot"
        assert kvs[laggard].store.keys == kvs[leader].store.keys
        assert len(kvs[laggard].store.keys) == 300
        assert nodes[laggard]._assembler.rejected == 0
        installed = nodes[laggard].core.snapshot
        assert installed is not None
        assert isinstance(installed.data, memoryview), "the core keeps the stored file's view"
        snapshot_bytes = len(kvs[leader].snapshot())
        assert nodes[leader]._snapshot_sender.chunks_sent >= snapshot_bytes // 4096
    finally:
        for n in nodes.values():
            await n.stop(transfer=False)
