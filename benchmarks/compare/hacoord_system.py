"""hacoord under the comparison harness: three ``hacoord serve`` processes, fsync on."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import hacoord
from hacoord.client import Client
from hacoord.coord.commands import Put, Request, encode_request
from hacoord.raft.node import RaftNode
from hacoord.raft.timing import Timing
from hacoord.server.in_process import in_process_member
from hacoord.server.local_cluster import LocalCluster, free_ports
from hacoord.server.state import ServerStateMachine


class HacoordSystem:
    """A local 3-process hacoord cluster driven through ``hacoord.client``."""

    name = "hacoord"
    supports_leases = True

    def __init__(self) -> None:
        self.cluster: LocalCluster | None = None
        self._client: Client | None = None
        self._client_cm: AbstractAsyncContextManager[Client] | None = None

    @property
    def client(self) -> Client:
        assert self._client is not None, "start() first"
        return self._client

    async def start(self, base_dir: Path, election_timeout_ms: int) -> None:
        """Start three members and connect a client."""
        timing = Timing(
            heartbeat_ms=max(10, election_timeout_ms // 6), election_timeout_ms=election_timeout_ms
        )
        self.cluster = LocalCluster(base_dir, n=3, timing=timing, log_level="WARNING")
        self.cluster.start()
        await self.cluster.wait_for_leader(30)
        cm = hacoord.connect(self.cluster.endpoints(), deadline_s=10)
        self._client_cm = cm
        self._client = await cm.__aenter__()
        await self.put("bench/warmup", b"x")

    async def stop(self) -> None:
        """Close the client and stop the members."""
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
        if self.cluster is not None:
            await self.cluster.close()

    async def put(self, key: str, value: bytes) -> None:
        """One exactly-once write (the client retries across failovers)."""
        await self.client.put(key, value)

    async def get(self, key: str) -> bytes | None:
        """One linearizable read (ReadIndex)."""
        kv = await self.client.get(key)
        return None if kv is None else kv.value

    async def leader(self) -> int:
        """The leading member's number (0-based), -1 if none."""
        assert self.cluster is not None
        nid = await self.cluster.leader()
        return nid - 1 if nid else -1

    def kill(self, member: int) -> None:
        """SIGKILL a member."""
        assert self.cluster is not None
        self.cluster.kill(member + 1)

    def restart(self, member: int) -> None:
        """Start a member again from its data directory."""
        assert self.cluster is not None
        self.cluster.start(member + 1)

    async def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """All members run, follow one leader and are caught up."""
        assert self.cluster is not None
        await self.cluster.wait_in_sync(timeout_s)

    async def lease_grant(self, ttl_s: int) -> int:
        """Grant a lease that the harness keeps alive itself."""
        return (await self.client.grant(ttl_s, keep_alive=False)).id

    async def lease_keepalive(self, lease_id: int) -> None:
        """Renew one lease."""
        await self.client.keep_alive_once(lease_id)

    async def lease_keepalive_many(self, lease_ids: list[int]) -> None:
        """Renew a batch of leases with one call and one leadership confirmation."""
        await self.client.keep_alive_many(lease_ids)

    async def lease_ids(self) -> set[int]:
        """Every live lease."""
        return set(await self.client.leases())

    def pid(self, member: int) -> int | None:
        """PID of a running member."""
        assert self.cluster is not None
        proc = self.cluster.procs.get(member + 1)
        return proc.pid if proc is not None and proc.poll() is None else None

    async def embedded_rate(self, seconds: float, base_dir: Path) -> float | None:
        """Commits per second of three in-process members, proposals pipelined, fsync on."""
        ports = free_ports(3)
        addrs = {i + 1: ("127.0.0.1", ports[i]) for i in range(3)}
        nodes: dict[int, RaftNode] = {}
        for nid in addrs:
            nodes[nid] = in_process_member(
                nid,
                addrs,
                base_dir,
                ServerStateMachine(),
                cluster_id="emb",
                timing=Timing(heartbeat_ms=50, election_timeout_ms=300),
                max_pending_proposals=4096,
            )
        for node in nodes.values():
            await node.start()
        try:
            leader = nodes[await nodes[1].wait_for_leader(20)]
            payload = encode_request(Request(Put("k", b"v" * 64)))
            done = 0
            end = time.monotonic() + seconds

            async def proposer() -> None:
                nonlocal done
                while time.monotonic() < end:
                    await leader.propose(payload)
                    done += 1

            started = time.monotonic()
            await asyncio.gather(*(proposer() for _ in range(1024)))
            return done / (time.monotonic() - started)
        finally:
            for node in nodes.values():
                await node.stop(transfer=False)
