"""Membership changes on real member processes while a client keeps writing."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from hacoord.raft.timing import Timing
from hacoord.server.config_file import Member
from hacoord.server.local_cluster import LocalCluster
from leaders import assert_one_leader_per_term


async def _member_op(c: LocalCluster, op: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST a membership operation to whoever leads, retrying across leader changes."""
    deadline = time.monotonic() + 60
    last = ""
    errors: list[str] = []
    while time.monotonic() < deadline:
        leader = await c.wait_for_leader()
        async with c.http().post(c.url(leader, f"/members/{op}"), json=payload, timeout=60) as resp:
            body: dict[str, Any] = await resp.json()
            if resp.status == 200:
                return body
            last = f"{resp.status} {body.get('error')}"
            errors.append(last)
            if resp.status not in (421, 409, 503):
                break
        await asyncio.sleep(0.1)
    raise AssertionError(f"member {op} {payload} failed: {errors}")


def _addresses(m: Member) -> dict[str, str]:
    return {"raft": f"{m.raft[0]}:{m.raft[1]}", "http": f"{m.http[0]}:{m.http[1]}"}


def _voters(body: dict[str, Any]) -> set[int]:
    return {m["id"] for m in body["members"] if m["role"] == "voter"}


async def test_grow_replace_everyone_and_remove_the_leader(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, n=3, timing=Timing(30, 300), snapshot_entries=50)
    c.start()
    acked: dict[str, str] = {}
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            key = f"w{i}"
            await c.put(key, str(i), timeout=30)
            acked[key] = str(i)
            i += 1

    try:
        await c.wait_for_leader()
        task = asyncio.create_task(writer())
        # Grow 3 -> 5.
        for nid in (4, 5):
            m = c.add_member_process(nid)
            body = await _member_op(
                c,
                "add",
                {"id": nid, "raft": f"127.0.0.1:{m.raft[1]}", "http": f"127.0.0.1:{m.http[1]}"},
            )
        assert _voters(body) == {1, 2, 3, 4, 5}
        # Replace the three original members one by one.
        for old, new in ((1, 6), (2, 7), (3, 8)):
            m = c.add_member_process(new)
            body = await _member_op(
                c,
                "replace",
                {
                    "old": old,
                    "id": new,
                    "raft": f"127.0.0.1:{m.raft[1]}",
                    "http": f"127.0.0.1:{m.http[1]}",
                },
            )
            assert old not in _voters(body) and new in _voters(body)
        assert _voters(body) == {4, 5, 6, 7, 8}
        for old in (1, 2, 3):
            c.kill(old)
        # Remove the leader itself: it hands over and steps down.
        leader = await c.wait_for_leader()
        body = await _member_op(c, "remove", {"id": leader})
        assert leader not in _voters(body)
        new_leader = await c.wait_for_leader(exclude={leader})
        assert new_leader != leader
        stop.set()
        await asyncio.wait_for(task, 60)
        assert len(acked) > 20
        c.kill(leader)
        for key, value in acked.items():
            assert await c.get(new_leader, key) == value, key
        st = await c.status(new_leader)
        assert st is not None and set(st["voters"]) == {4, 5, 6, 7, 8} - {leader}
        assert assert_one_leader_per_term(c) >= 2
    finally:
        stop.set()
        await c.close()


async def test_removal_that_would_lose_the_majority_is_refused(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, n=3, timing=Timing(30, 300))
    c.start()
    try:
        leader = await c.wait_for_leader()
        others = [n for n in (1, 2, 3) if n != leader]
        c.kill(others[0])
        # Wait until the leader notices the dead member (CheckQuorum's activity window).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = await c.status(leader)
            if st and not st["peers"][str(others[0])]["recent_active"]:
                break
            await asyncio.sleep(0.05)
        async with c.http().post(c.url(leader, "/members/remove"), json={"id": others[1]}) as r:
            body = await r.json()
        assert r.status == 409 and "fewer than a majority" in body["error"]
        async with c.http().get(c.url(leader, "/members")) as r:
            assert len((await r.json())["members"]) == 3
        host, port = c.members[leader].http
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hacoord", "member", "list", "--endpoints", f"{host}:{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        lines = out.decode().splitlines()
        assert len(lines) == 3 and all("voter" in line for line in lines)
        assert sum(line.startswith("*") for line in lines) == 1
    finally:
        await c.close()
