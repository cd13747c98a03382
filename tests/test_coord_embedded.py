"""Embedded mode: three members in this process, clients that call their service directly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hacoord.client import Client
from hacoord.client.transport import LocalTransport
from hacoord.coord import EventType, LeaseNotFoundError, Put
from hacoord.raft.node import RaftNode
from hacoord.raft.timing import Timing
from hacoord.server.coordination import CoordinationService
from hacoord.server.in_process import in_process_member
from hacoord.server.local_cluster import free_ports
from hacoord.server.state import ServerStateMachine


@dataclass
class Member:
    node: RaftNode
    service: CoordinationService


@pytest.fixture
async def members(tmp_path: Path) -> AsyncIterator[dict[int, Member]]:
    ports = free_ports(3)
    addrs = {i + 1: ("127.0.0.1", ports[i]) for i in range(3)}
    out: dict[int, Member] = {}
    for nid in addrs:
        sm = ServerStateMachine()
        node = in_process_member(
            nid,
            addrs,
            tmp_path,
            sm,
            cluster_id="emb",
            timing=Timing(heartbeat_ms=30, election_timeout_ms=300),
        )
        out[nid] = Member(node, CoordinationService(node, sm))
    for m in out.values():
        await m.node.start()
        await m.service.start()
    try:
        yield out
    finally:
        for m in out.values():
            await m.service.stop()
            await m.node.stop(transfer=False)


async def test_in_process_clients_write_read_and_elect(members: dict[int, Member]) -> None:
    leader_id = await members[1].node.wait_for_leader(10)
    leader = members[leader_id]
    follower = members[next(i for i in members if i != leader_id)]
    on_leader = Client.local(leader.service)
    via_follower = Client.local(follower.service, forward=LocalTransport(leader.service))
    async with on_leader, via_follower:
        put = await via_follower.put("emb/k", b"v")  # forwarded: the follower cannot write
        kv = await via_follower.get("emb/k")  # a linearizable read served by the follower
        assert kv is not None and kv.value == b"v" and kv.mod_revision == put.revision
        leadership = await on_leader.election("emb").acquire(b"me", ttl_s=2)
        assert (await leadership.fenced(Put("emb/owner", b"me"))).succeeded
        holder = await via_follower.election("emb").leader()
        assert holder is not None and holder.token == leadership.token
        await leadership.resign()
        assert await via_follower.election("emb").leader() is None
        with pytest.raises(LeaseNotFoundError):
            await on_leader.keep_alive_once(leadership.lease.id)


async def test_a_follower_without_forwarding_says_it_cannot_write(
    members: dict[int, Member],
) -> None:
    from hacoord.client import UnavailableError

    leader_id = await members[1].node.wait_for_leader(10)
    follower = members[next(i for i in members if i != leader_id)]
    async with Client(LocalTransport(follower.service), deadline_s=0.5) as client:
        with pytest.raises(UnavailableError, match="not the leader"):
            await client.put("x", b"y")


async def test_observe_locks_and_cancelled_campaigns(members: dict[int, Member]) -> None:
    import asyncio

    leader_id = await members[1].node.wait_for_leader(10)
    service = members[leader_id].service
    async with Client.local(service) as a, Client.local(service) as b:
        changes: list[tuple[bytes, int] | None] = []
        seen = asyncio.Event()

        async def observer() -> None:
            async for holder in a.election("obs").observe():
                changes.append(None if holder is None else (holder.value, holder.token))
                seen.set()

        watching = asyncio.create_task(observer())
        await asyncio.wait_for(seen.wait(), 10)
        first = await a.election("obs").acquire(b"one", ttl_s=2)
        assert await first.proclaim(b"one-v2")
        waiter = asyncio.create_task(b.election("obs").acquire(b"two", ttl_s=2))
        await _wait_for_candidates(a, "_hacoord/election/obs/", 2)
        await first.resign()
        second = await asyncio.wait_for(waiter, 10)
        while len(changes) < 4:
            seen.clear()
            await asyncio.wait_for(seen.wait(), 10)
        watching.cancel()
        assert changes[:4] == [
            None,
            (b"one", first.token),
            (b"one-v2", first.token),
            (b"two", second.token),
        ]

        # A lock is exclusive; a campaign cancelled while waiting leaves nothing behind.
        held = await a.lock("jobs").acquire(b"a", ttl_s=2)
        blocked = asyncio.create_task(b.lock("jobs").acquire(b"b", ttl_s=2))
        await _wait_for_candidates(a, "_hacoord/lock/jobs/", 2)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        remaining = await a.range("_hacoord/lock/jobs/", prefix=True)
        assert [kv.value for kv in remaining.kvs] == [b"a"], "the cancelled candidate is gone"
        assert len(service.sm.leases.leases) == 2, "only the holders' leases remain"
        await held.resign()
        await second.resign()


async def _wait_for_candidates(client: Client, prefix: str, count: int) -> None:
    """Return once ``count`` keys exist under ``prefix`` (following a watch)."""
    now = await client.range(prefix, prefix=True)
    keys = {kv.key for kv in now.kvs}
    if len(keys) >= count:
        return
    async for event in client.watch(prefix, True, now.revision + 1):
        if event.type is EventType.PUT:
            keys.add(event.kv.key)
        else:
            keys.discard(event.kv.key)
        if len(keys) >= count:
            return


async def test_batch_keepalive_and_lease_listing(members: dict[int, Member]) -> None:
    leader_id = await members[1].node.wait_for_leader(10)
    async with Client.local(members[leader_id].service) as client:
        leases = [await client.grant(3, keep_alive=False) for _ in range(3)]
        ids = [lease.id for lease in leases]
        assert await client.keep_alive_many([*ids, 999_999]) == [3.0, 3.0, 3.0, 0.0]
        assert set(ids) <= set(await client.leases())
        await client.revoke(ids[0])
        remaining = await client.leases()
        assert ids[0] not in remaining and set(ids[1:]) <= set(remaining)


class CountingTransport(LocalTransport):
    """Counts the calls per operation that reach the member."""

    def __init__(self, service: CoordinationService) -> None:
        super().__init__(service)
        self.calls: dict[str, int] = {}

    async def call(self, op: str, body: object, deadline: float) -> object:
        self.calls[op] = self.calls.get(op, 0) + 1
        return await super().call(op, body, deadline)


async def test_concurrent_writes_travel_in_batches_with_their_own_outcomes(
    members: dict[int, Member],
) -> None:
    import asyncio

    leader_id = await members[1].node.wait_for_leader(10)
    transport = CountingTransport(members[leader_id].service)
    async with Client(transport) as client:
        writes = [client.put(f"batch/{i}", b"%d" % i) for i in range(100)]
        doomed = client.put("batch/orphan", b"x", lease=123_456)
        results = await asyncio.gather(*writes, doomed, return_exceptions=True)
    assert isinstance(results[-1], LeaseNotFoundError), "one refusal stays with its write"
    revisions = [r.revision for r in results[:-1]]  # type: ignore[union-attr]
    assert len(set(revisions)) == 100
    calls = transport.calls.get("submit", 0) + transport.calls.get("submit_many", 0)
    assert transport.calls.get("submit_many", 0) >= 1 and calls < 101 / 4
    kvs = members[leader_id].service.sm.range("batch/", prefix=True).kvs
    assert sorted(kv.value for kv in kvs) == sorted(b"%d" % i for i in range(100))
