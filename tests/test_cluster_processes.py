"""Real member processes on 127.0.0.1: replication, failover, pauses, partitions, bad input."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgpack
import pytest

from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster
from hacoord.testing.faultproxy import FaultProxy
from leaders import assert_one_leader_per_term

TIMING = Timing(heartbeat_ms=30, election_timeout_ms=300)


@pytest.fixture
async def cluster3(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    c = LocalCluster(tmp_path, n=3, timing=TIMING, snapshot_entries=40)
    c.start()
    try:
        yield c
    finally:
        await c.close()


async def _agree_on_one_leader(c: LocalCluster, members: list[int]) -> int:
    """Wait until every listed member names the same leader, which leads."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        statuses = [await c.status(n) for n in members]
        leaders = {s["leader"] for s in statuses if s}
        roles = [s["id"] for s in statuses if s and s["role"] == "leader"]
        if len(statuses) == len([s for s in statuses if s]) and len(leaders) == 1 and roles:
            (leader,) = leaders
            if roles == [leader]:
                return leader
        await asyncio.sleep(0.05)
    raise AssertionError(f"members {members} never agreed on one leader")


async def _wait_applied(c: LocalCluster, nid: int, index: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await c.status(nid)
        if st and st["applied_index"] >= index:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"member {nid} did not apply index {index} within {timeout}s")


@pytest.mark.parametrize("n", [3, 5])
async def test_cluster_replicates_and_agrees_on_one_leader(tmp_path: Path, n: int) -> None:
    c = LocalCluster(tmp_path, n=n, timing=TIMING)
    c.start()
    try:
        await c.wait_for_leader()
        last = 0
        for i in range(20):
            last = (await c.put(f"k{i}", f"v{i}")).index
        leader = await _agree_on_one_leader(c, list(range(1, n + 1)))
        for nid in range(1, n + 1):
            await _wait_applied(c, nid, last)
            assert await c.get(nid, "k19", linearizable=False) == "v19"
        assert await c.get(leader, "k0") == "v0"
    finally:
        await c.close()


async def test_repeated_leader_kills_lose_no_acknowledged_write(cluster3: LocalCluster) -> None:
    c = cluster3
    acknowledged: dict[str, str] = {}
    leader = await c.wait_for_leader()
    for round_no in range(10):
        for i in range(5):
            key, value = f"r{round_no}-{i}", f"value-{round_no}-{i}"
            await c.put(key, value)
            acknowledged[key] = value
        c.kill(leader)
        res = await c.put(f"after-kill-{round_no}", "x")
        acknowledged[f"after-kill-{round_no}"] = "x"
        assert res.leader != leader, "a killed member cannot acknowledge"
        c.start(leader)
        leader = res.leader
    # Write enough while one member is down that it must catch up from a snapshot.
    laggard = next(n for n in (1, 2, 3) if n != leader)
    c.kill(laggard)
    last = 0
    for i in range(120):
        last = (await c.put(f"bulk{i}", str(i))).index
        acknowledged[f"bulk{i}"] = str(i)
    c.start(laggard)
    await _wait_applied(c, laggard, last)
    st = await c.status(laggard)
    assert st is not None and st["snapshot_index"] > 0
    final_leader = await c.wait_for_leader()
    for key, value in acknowledged.items():
        assert await c.get(final_leader, key) == value, key
    for key in ("r0-0", "after-kill-9", "bulk119"):
        assert await c.get(laggard, key, linearizable=False) == acknowledged[key]
    assert assert_one_leader_per_term(c) >= 11


async def test_paused_leader_steps_down_without_disrupting_the_new_one(
    cluster3: LocalCluster,
) -> None:
    c = cluster3
    old = await c.wait_for_leader()
    await c.put("before", "1")
    c.signal(old, signal.SIGSTOP)
    try:
        new = await c.wait_for_leader(exclude={old})
        assert new != old
        await c.put("during", "2")
        new_term = (await c.status(new) or {})["term"]
    finally:
        c.signal(old, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = await c.status(old)
        if st and st["role"] == "follower" and st["leader"] == new:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the resumed old leader did not step down and follow")
    await c.put("after", "3")
    st_new = await c.status(new)
    assert st_new is not None
    assert st_new["role"] == "leader" and st_new["term"] == new_term
    assert await c.get(old, "during", linearizable=False) in ("2", None)


async def test_partition_minority_cannot_commit_majority_can(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, n=3, timing=TIMING)
    proxies: dict[tuple[int, int], FaultProxy] = {}
    for i in c.members:
        for j in c.members:
            if i != j:
                proxy = FaultProxy(c.members[j].raft)
                await proxy.start()
                proxies[(i, j)] = proxy
                c.peer_addresses[(i, j)] = ("127.0.0.1", proxy.port)
    c.start()
    try:
        leader = await c.wait_for_leader()
        await c.put("base", "0")
        # Cut the leader off from both followers, both directions.
        for (i, j), proxy in proxies.items():
            if leader in (i, j):
                proxy.mode = "drop"
                await proxy.reset()
        new = await c.wait_for_leader(exclude={leader})
        assert new != leader
        res = await c.put("majority", "yes")
        assert res.leader == new
        # The isolated old leader steps down (CheckQuorum) and cannot commit.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = await c.status(leader)
            if st and st["role"] != "leader":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("isolated leader kept leading")
        before = (await c.status(leader) or {})["commit_index"]
        async with c.http().put(c.url(leader, "/v1/kv/minority"), data=b"no") as resp:
            assert resp.status in (421, 503, 504)
        assert (await c.status(leader) or {})["commit_index"] == before
        for proxy in proxies.values():
            proxy.mode = "pass"
            await proxy.reset()  # "drop" left holes in the byte streams
        await _wait_applied(c, leader, res.index)
        assert await c.get(leader, "majority", linearizable=False) == "yes"
        assert await c.get(new, "minority") is None
        await _agree_on_one_leader(c, [1, 2, 3])
    finally:
        await c.close()
        for proxy in proxies.values():
            await proxy.close()


def _raw(port: int, payload: bytes) -> bytes:
    """Send ``payload`` on a fresh connection; return what comes back before close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(4096)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


async def test_bad_input_is_refused_and_the_cluster_keeps_working(cluster3: LocalCluster) -> None:
    c = cluster3
    await c.wait_for_leader()
    target = 1
    port = c.members[target].raft[1]
    other_cluster = msgpack.packb([b"HACO", 1, "someone-else", 2, target])
    cases = {
        "garbage": b"\x00\x01garbage-bytes" * 10,
        "truncated": struct.pack(">I", 1000) + b"short",
        "oversized": struct.pack(">I", 0xFFFFFFF0) + b"x" * 16,
        "wrong cluster": _frame(other_cluster),
    }
    for payload in cases.values():
        await asyncio.to_thread(_raw, port, payload)
    await c.put("still", "working")
    log_text = c.log_path(target).read_text()
    assert "someone-else" in log_text
    assert log_text.count("WARNING") >= len(cases)
    st = await c.status(target)
    assert st is not None and st["leader"] != 0


async def test_status_cli_shows_one_leader_and_transfer_moves_it(cluster3: LocalCluster) -> None:
    c = cluster3
    leader = await c.wait_for_leader()
    await c.put("x", "1")
    endpoints = ",".join(f"{h}:{p}" for h, p in (m.http for m in c.members.values()))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hacoord",
        "status",
        "--endpoints",
        endpoints,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0].split()[:3] == ["ENDPOINT", "ID", "ROLE"]
    assert sum(" leader " in f" {line} " for line in lines[1:]) == 1
    async with c.http().get(c.url(leader, "/metrics")) as resp:
        assert resp.status == 200
        metrics = await resp.text()
    for name in (
        "hacoord_term",
        "hacoord_is_leader 1",
        "hacoord_leader_changes_total",
        "hacoord_commit_latency_seconds_bucket",
        "hacoord_fsync_latency_seconds_count",
        "hacoord_proposals_total",
        "hacoord_peer_rtt_seconds_count",
    ):
        assert name in metrics, name
    async with c.http().get(c.url(leader, "/health")) as resp:
        assert resp.status == 200 and (await resp.json())["ok"] is True
    target = next(n for n in (1, 2, 3) if n != leader)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hacoord",
        "transfer-leadership",
        str(target),
        "--endpoints",
        endpoints,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert await c.leader() == target


async def test_health_is_503_without_a_quorum(cluster3: LocalCluster) -> None:
    c = cluster3
    leader = await c.wait_in_sync()  # every member up, so the survivor answers
    survivor = next(n for n in (1, 2, 3) if n != leader)
    for nid in (1, 2, 3):
        if nid != survivor:
            c.kill(nid)
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        async with c.http().get(c.url(survivor, "/health")) as resp:
            status = resp.status
            body = await resp.json()
        if status == 503:
            break
        await asyncio.sleep(0.05)
    assert status == 503 and body["problems"] == ["no leader known"]
