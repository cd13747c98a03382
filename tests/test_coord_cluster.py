"""The coordination API against real member processes: KV, leases, watches, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import msgpack
import pytest

import hacoord
from hacoord.client import Client, Election, LeaseLostError
from hacoord.coord import (
    Compare,
    CompareOp,
    EventType,
    InvalidCommandError,
    LeaseNotFoundError,
    Put,
    Target,
    Txn,
)
from hacoord.coord.election import candidates_prefix
from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster

TIMING = Timing(heartbeat_ms=30, election_timeout_ms=300)
SURVIVING_TTL_S = 10 * TIMING.election_timeout_ms / 1000
"""A lease TTL that outlives a failover, split vote included (docs/coordination.md)."""


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    c = LocalCluster(tmp_path, n=3, timing=TIMING, snapshot_entries=200)
    c.start()
    try:
        await c.wait_for_leader()
        yield c
    finally:
        await c.close()


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[Client]:
    async with hacoord.connect(cluster.endpoints()) as c:
        yield c


async def test_kv_and_transactions_over_the_network(client: Client) -> None:
    first = await client.put("cfg/a", b"1")
    second = await client.put("cfg/b", b"2")
    assert second.revision > first.revision
    kv = await client.get("cfg/a")
    assert kv is not None and kv.value == b"1" and kv.version == 1
    listing = await client.range("cfg/", prefix=True)
    assert [k.key for k in listing.kvs] == ["cfg/a", "cfg/b"]
    cas = Txn(
        compares=(Compare("cfg/a", Target.VALUE, CompareOp.EQUAL, b"1"),),
        success=(Put("cfg/a", b"one"),),
    )
    assert (await client.txn(cas)).succeeded
    assert not (await client.txn(cas)).succeeded
    deleted = await client.delete("cfg/", prefix=True)
    assert len(deleted.deleted) == 2
    assert await client.get("cfg/a") is None


async def test_an_abandoned_lease_expires_and_takes_its_keys(client: Client) -> None:
    lease = await client.grant(1.0, keep_alive=False)
    await client.put("session/x", b"here", lease=lease.id)
    start = (await client.range("session/x")).revision
    async for event in client.watch("session/x", start_revision=start):
        if event.type is EventType.DELETE:
            break
    assert await client.get("session/x") is None
    with pytest.raises(LeaseNotFoundError):
        await client.put("session/y", b"late", lease=lease.id)


async def test_a_kept_alive_lease_outlives_leader_kills(
    cluster: LocalCluster, client: Client
) -> None:
    lease = await client.grant(SURVIVING_TTL_S)
    await client.put("alive", b"yes", lease=lease.id)
    for _ in range(2):
        # Kill only a fully joined cluster's leader: with two members down no lease
        # can be renewed, and the client rightly reports it lost.
        leader = await cluster.wait_in_sync()
        cluster.kill(leader)
        await cluster.wait_for_leader(exclude={leader})
        cluster.start(leader)
        await asyncio.wait_for(_renewed_after(client, lease.id), 10)
    assert not lease.is_lost, lease.lost_reason
    assert (await client.get("alive")) is not None
    ttl, remaining = await client.time_to_live(lease.id)
    assert ttl == SURVIVING_TTL_S and 0 < remaining <= SURVIVING_TTL_S
    leader = await cluster.wait_for_leader()
    async with cluster.http().get(cluster.url(leader, "/metrics")) as resp:
        samples = dict(
            line.split(" ", 1) for line in (await resp.text()).splitlines() if line[:1] != "#"
        )
    assert samples["hacoord_leases"] == "1"
    assert float(samples["hacoord_lease_keepalives_total"]) >= 1
    assert float(samples["hacoord_revision"]) >= 2


async def test_a_lease_survives_a_paused_leader(cluster: LocalCluster, client: Client) -> None:
    """A SIGSTOPped leader keeps its connections open and never answers: keep-alives
    must move on to the new leader instead of waiting on it until the deadline."""
    lease = await client.grant(SURVIVING_TTL_S)
    leader = await cluster.wait_in_sync()
    await _renewed_after(client, lease.id)  # the client now sticks to this leader
    cluster.signal(leader, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # Until the lease's own loop has renewed it with a keep-alive sent after the
        # pause, or lost it.
        while not lease.is_lost and lease.deadline <= stopped + lease.ttl_s * 0.98:
            await asyncio.sleep(0.05)
    finally:
        cluster.signal(leader, signal.SIGCONT)
    assert not lease.is_lost, lease.lost_reason


async def test_a_read_sent_to_a_paused_leader_is_asked_again_of_the_new_one(
    cluster: LocalCluster, client: Client
) -> None:
    """A follower forwards a linearizable read to the leader; the leader is SIGSTOPped
    and never answers. Once a new leader is elected the follower must ask it, not wait
    out the read's whole budget."""
    await client.put("read/me", b"1")
    leader = await cluster.wait_in_sync()
    follower = next(nid for nid in cluster.members if nid != leader)
    cluster.signal(leader, signal.SIGSTOP)
    try:
        async with cluster.http().post(
            cluster.url(follower, "/v1/coord/range"),
            data=msgpack.packb(["read/me", False, 0, True]),
        ) as resp:
            reply = msgpack.unpackb(await resp.read())
    finally:
        cluster.signal(leader, signal.SIGCONT)
    # Answered (200), or refused at once while no leader is known (421, the client
    # retries): never held until the 5 s budget ran out (504).
    assert resp.status in (200, 421), reply


async def _renewed_after(client: Client, lease_id: int) -> None:
    """Wait until a keep-alive succeeds (on whichever member leads now)."""
    while True:
        try:
            await client.keep_alive_once(lease_id, timeout=1)
            return
        except hacoord.client.UnavailableError:
            continue


async def test_watch_sees_every_write_once_across_leader_changes(
    cluster: LocalCluster, client: Client
) -> None:
    start = (await client.put("w/start", b"0")).revision
    seen: list[tuple[int, str]] = []
    acknowledged: list[str] = []
    done = asyncio.Event()

    async def watcher() -> None:
        async with hacoord.connect(cluster.endpoints()) as watch_client:
            async for event in watch_client.watch("w/", prefix=True, start_revision=start):
                seen.append((event.revision, event.kv.key))
                if event.kv.key == "w/end":
                    done.set()
                    return

    task = asyncio.create_task(watcher())
    for i in range(30):
        if i in (10, 20):
            leader = await cluster.wait_for_leader()
            cluster.kill(leader)
            cluster.start(leader)
        await client.put(f"w/{i:02d}", b"v")
        acknowledged.append(f"w/{i:02d}")
    await client.put("w/end", b"")
    await asyncio.wait_for(done.wait(), 30)
    await task
    revisions = [rev for rev, _ in seen]
    assert revisions == sorted(set(revisions)), "in order, no duplicates"
    keys = [key for _, key in seen]
    assert keys[0] == "w/start" and keys[-1] == "w/end"
    assert keys[1:-1] == acknowledged, "every acknowledged write seen exactly once"


async def test_bad_requests_get_clear_errors_and_change_nothing(
    cluster: LocalCluster, client: Client
) -> None:
    before = (await client.range("", prefix=True)).revision
    leader = await cluster.wait_for_leader()
    http = cluster.http()
    async with http.post(cluster.url(leader, "/v1/coord/submit"), data=b"\xc1junk") as resp:
        body = msgpack.unpackb(await resp.read())
        assert resp.status == 400 and "not valid msgpack" in body[1][1]
    bad = msgpack.packb([0, 0, 0, [1, "k", "text-not-bytes", 0]])
    async with http.post(cluster.url(leader, "/v1/coord/submit"), data=bad) as resp:
        body = msgpack.unpackb(await resp.read())
        assert resp.status == 400 and "value must be bytes, got str" in body[1][1]
    async with http.post(cluster.url(leader, "/v1/coord/range"), data=b"\x93") as resp:
        assert resp.status == 400
    with pytest.raises(InvalidCommandError, match="1048577 bytes, over the limit of 1048576"):
        await client.put("big", b"x" * ((1 << 20) + 1))
    with pytest.raises(InvalidCommandError, match="larger than the member accepts"):
        await client.put("huge", b"x" * (2 << 20))
    with pytest.raises(LeaseNotFoundError, match="lease 424242 does not exist"):
        await client.put("orphan", b"x", lease=424242)
    with pytest.raises(LeaseNotFoundError):
        await client.keep_alive_once(424242)
    assert (await client.range("", prefix=True)).revision == before


async def test_election_hands_over_with_growing_tokens(
    client: Client, cluster: LocalCluster
) -> None:
    async with hacoord.connect(cluster.endpoints()) as other:
        first = await client.election("db").acquire(b"host-a", ttl_s=2)
        second_task = asyncio.create_task(other.election("db").acquire(b"host-b", ttl_s=2))
        holder = await client.election("db").leader()
        assert holder is not None and holder.value == b"host-a"
        assert holder.token == first.token
        assert (await first.fenced(Put("db/primary", b"host-a"))).succeeded
        resigned_at = time.monotonic()
        await first.resign()
        second = await asyncio.wait_for(second_task, 10)
        assert second.token > first.token
        assert not (await first.fenced(Put("db/primary", b"stale"))).succeeded
        assert (await client.get("db/primary")).value == b"host-a"  # type: ignore[union-attr]
        assert time.monotonic() >= resigned_at
        await second.resign()
    with pytest.raises(LeaseLostError):
        raise LeaseLostError("sanity: the error type is importable and raisable")


async def test_one_holder_at_a_time_while_the_cluster_leader_is_killed(
    cluster: LocalCluster,
) -> None:
    """Two candidates take turns; the cluster leader is SIGKILLed again and again.

    Every term of office is recorded by the holder itself: elected when ``acquire``
    returned; ended just before resigning, or, for a holder that goes silent (stops
    its keep-alives, like a hung process), when its ``lost()`` fired. Every third
    election (counted when it is won) is silent. The next holder must be elected only
    after the previous one stopped, tokens must grow, and no lease may be lost to a
    failover, neither a holder's nor a waiting candidate's.
    """
    terms: list[tuple[float, float, int, str, str]] = []
    won = itertools.count()
    stop = asyncio.Event()
    new_term = asyncio.Event()
    elections: list[Election] = []

    async def candidate(name: str) -> None:
        async with hacoord.connect(cluster.endpoints(), deadline_s=20) as c:
            election = c.election("orders")
            elections.append(election)
            while not stop.is_set():
                leadership = await election.acquire(name.encode(), ttl_s=SURVIVING_TTL_S)
                elected = time.monotonic()
                if next(won) % 3 == 2:
                    await leadership.lease.stop()
                    await leadership.lost()
                    ended, reason = time.monotonic(), "silent"
                else:
                    lost = asyncio.create_task(leadership.lost())
                    done, _ = await asyncio.wait({lost}, timeout=0.4)
                    lost.cancel()
                    ended = time.monotonic()
                    reason = leadership.lease.lost_reason if done else ""
                    if not done:
                        await leadership.fenced(Put("orders/primary", name.encode()))
                        await leadership.resign()
                terms.append((elected, ended, leadership.token, name, reason))
                new_term.set()

    tasks = [asyncio.create_task(candidate(n)) for n in ("a", "b")]

    async def next_term() -> None:
        """Wait for a term to end; a candidate that dies fails the test at once."""
        new_term.clear()
        waiter = asyncio.create_task(new_term.wait())
        done, _ = await asyncio.wait({waiter, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        for task in tasks:
            if task in done:
                task.result()  # raises what killed the candidate
                raise AssertionError("a candidate stopped campaigning")

    try:
        for _ in range(4):
            leader = await cluster.wait_in_sync()
            cluster.kill(leader)
            await cluster.wait_for_leader(exclude={leader})
            cluster.start(leader)
            before = len(terms)
            while len(terms) < before + 2:  # holders keep changing after the failover
                await next_term()
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    terms.sort()
    assert len(terms) >= 8
    assert "silent" in {t[4] for t in terms}
    assert {t[4] for t in terms} <= {"", "silent"}, "no lease lost to a failover"
    assert [e.recampaigns for e in elections] == [0, 0], "no waiting candidate lost its lease"
    tokens = [t[2] for t in terms]
    assert tokens == sorted(set(tokens)), "tokens grow strictly"
    for prev, nxt in itertools.pairwise(terms):
        assert prev[1] <= nxt[0], f"{nxt[3]} elected before {prev[3]} stopped ({prev[4]})"


async def test_a_waiting_candidate_whose_lease_ends_campaigns_again(
    cluster: LocalCluster, client: Client
) -> None:
    holder = await client.election("jobs").acquire(b"first", ttl_s=2)
    async with hacoord.connect(cluster.endpoints()) as other:
        election = other.election("jobs")
        waiting = asyncio.create_task(election.acquire(b"second", ttl_s=2))
        prefix = candidates_prefix("jobs")
        start = (await client.range(prefix, prefix=True)).revision
        async for event in client.watch(prefix, True, start):
            if event.type is EventType.PUT and event.kv.value == b"second":
                first_lease = event.kv.lease
                break
        await client.revoke(first_lease)  # the waiting candidate's lease ends
        async for event in client.watch(prefix, True, start):
            if event.type is EventType.PUT and event.kv.lease not in (first_lease, holder.lease.id):
                break  # it campaigned again with a new lease
        assert not waiting.done()
        assert (await client.election("jobs").leader()) == holder.holder
        await holder.resign()
        second = await asyncio.wait_for(waiting, 10)
        assert election.recampaigns == 1
        assert second.token > holder.token and second.lease.id != first_lease
        assert not second.is_lost
        await second.resign()


async def test_a_member_that_has_not_applied_a_grant_never_says_lease_not_found(
    cluster: LocalCluster, client: Client
) -> None:
    """Kill a follower, grant a lease, kill the leader, restart the follower: while the
    restarted member catches up it must redirect or ask for a retry, never answer 409."""
    leader = await cluster.wait_in_sync()
    behind = next(nid for nid in cluster.members if nid != leader)
    cluster.kill(behind)
    lease = await client.grant(30)
    granted_at = (await cluster.status(leader) or {})["commit_index"]
    cluster.kill(leader)
    cluster.start(behind)
    answers: list[tuple[int, str]] = []
    while True:
        try:
            async with cluster.http().post(
                cluster.url(behind, "/v1/coord/keepalive"), data=msgpack.packb([lease.id])
            ) as resp:
                reply = msgpack.unpackb(await resp.read())
                answers.append((resp.status, reply[0]))
        except (OSError, TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(0.01)  # not listening yet: poll again shortly
            continue
        status = await cluster.status(behind)
        if status and status["applied_index"] >= granted_at and status["leader"]:
            break
    assert answers, "the restarted member answered no keep-alive"
    assert all(status != 409 for status, _ in answers), answers
    await asyncio.wait_for(_renewed_after(client, lease.id), 10)
    assert not lease.is_lost, lease.lost_reason


async def test_200_leases_survive_20_leader_kills(cluster: LocalCluster, client: Client) -> None:
    """Four clients (each starting at a random member) keep 50 leases each alive."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(hacoord.connect(cluster.endpoints())) for _ in range(4)
        ]
        grants = (c.grant(SURVIVING_TTL_S) for c in clients for _ in range(50))
        leases = await asyncio.gather(*grants)
        await _kill_the_leader_again_and_again(cluster, 20)
        lost = {lease.id: lease.lost_reason for lease in leases if lease.is_lost}
        assert lost == {}, f"{len(lost)} of 200 leases lost: {lost}"
        assert set(await client.leases()) >= {lease.id for lease in leases}


async def _kill_the_leader_again_and_again(cluster: LocalCluster, times: int) -> None:
    for _ in range(times):
        leader = await cluster.wait_in_sync()
        cluster.kill(leader)
        await cluster.wait_for_leader(exclude={leader})
        cluster.start(leader)
    await cluster.wait_in_sync()


async def _cli(*args: str) -> tuple[int, list[dict[str, object]], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hacoord",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert proc.returncode is not None
    return proc.returncode, lines, err.decode()


async def test_kv_lease_and_elect_commands(cluster: LocalCluster) -> None:
    eps = ["--endpoints", ",".join(cluster.endpoints())]
    code, out, _ = await _cli("lease", "grant", "--ttl", "30", *eps)
    assert code == 0
    lease = int(out[0]["lease"])  # type: ignore[call-overload]
    code, out, _ = await _cli("kv", "put", "cli/a", "hello", "--lease", str(lease), *eps)
    assert code == 0 and int(out[0]["revision"]) > lease  # type: ignore[call-overload]
    code, out, _ = await _cli("kv", "get", "cli/", "--prefix", *eps)
    assert code == 0 and [(o["key"], o["value"], o["lease"]) for o in out] == [
        ("cli/a", "hello", lease)
    ]
    code, out, _ = await _cli("lease", "ttl", str(lease), *eps)
    assert code == 0 and out[0]["ttl_s"] == 30.0
    code, out, _ = await _cli("lease", "revoke", str(lease), *eps)
    assert code == 0 and out[0]["deleted"] == ["cli/a"]
    code, out, err = await _cli("kv", "get", "cli/a", *eps)
    assert code == 1 and out == []
    code, _, err = await _cli("lease", "ttl", str(lease), *eps)
    assert code == 1 and f"lease {lease} does not exist" in err
    code, _, err = await _cli("kv", "put", "cli/b", "x", "--lease", "999999", *eps)
    assert code == 1 and "lease 999999 does not exist" in err

    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hacoord",
        "elect",
        "cli-election",
        "me",
        *eps,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    elected = json.loads(await asyncio.wait_for(holder.stdout.readline(), 20))
    assert elected["elected"] == "cli-election" and elected["token"] > 0
    async with hacoord.connect(cluster.endpoints()) as c:
        current = await c.election("cli-election").leader()
        assert current is not None and current.token == elected["token"]
        holder.send_signal(signal.SIGINT)
        resigned = json.loads(await asyncio.wait_for(holder.stdout.readline(), 20))
        assert resigned == {"resigned": "cli-election", "token": elected["token"]}
        assert await holder.wait() == 0
        assert await c.election("cli-election").leader() is None
