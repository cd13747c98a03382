"""``hacoord demo``: a local cluster of real processes showing election and failover."""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

from hacoord.raft.timing import Timing
from hacoord.server.local_cluster import LocalCluster


def _say(text: str) -> None:
    print(text, flush=True)


async def run_demo(nodes: int, election_timeout_ms: float, directory: str | None) -> int:
    """Start ``nodes`` members, write, kill the leader, measure failover, rejoin."""
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

    tokens = []
    for i in range(3):
        res = await cluster.put(f"greeting{i}", f"hello {i}")
        tokens.append(res.index)
        _say(f"  wrote greeting{i} through member {res.leader} at log index {res.index}")

    _say(f"SIGKILL the leader, member {leader}")
    killed_at = time.monotonic()
    cluster.kill(leader)
    res = await cluster.put("after-failover", "still writable")
    failover_s = time.monotonic() - killed_at
    new_st = await cluster.status(res.leader)
    new_term = new_st["term"] if new_st else "?"
    _say(
        f"member {res.leader} took over in term {new_term}: first write committed "
        f"{failover_s * 1000:.0f} ms after the kill (index {res.index})"
    )
    tokens.append(res.index)
    value = await cluster.get(res.leader, "greeting2")
    _say(f"  greeting2 survived the failover: {value!r}")

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
    else:
        _say(f"  member {leader} did not catch up within 20 s")
        return 1

    increasing = all(a < b for a, b in itertools.pairwise(tokens))
    _say(
        f"fencing: write indexes {tokens} increase strictly across the failover "
        f"({'ok' if increasing else 'BROKEN'}); a resource that remembers the highest "
        "index it accepted rejects anything the old leader still sends"
    )
    return 0 if increasing else 1
