"""ReadIndex: linearizable reads without a log write."""

import pytest

from hacoord.raft.errors import NotLeaderError
from hacoord.raft.types import MessageType
from harness import Cluster


def test_leader_read_confirms_with_a_heartbeat_round() -> None:
    c = Cluster(3)
    c.elect(1)
    index = c.propose(1, b"a")
    c.cores[1].read_index(b"r1")
    c.process()
    [rs] = c.read_states[1]
    assert rs.context == b"r1" and rs.index >= index


def test_many_reads_share_one_heartbeat_round() -> None:
    c = Cluster(3)
    c.elect(1)
    c.sent.clear()
    for i in range(50):
        c.cores[1].read_index(b"r%d" % i)
    c.process()
    assert len(c.read_states[1]) == 50
    heartbeats = [m for m in c.sent if m.type.name == "HEARTBEAT"]
    assert len(heartbeats) == 2


def test_follower_read_is_forwarded_to_the_leader() -> None:
    c = Cluster(3)
    c.elect(1)
    index = c.propose(1, b"a")
    c.cores[2].read_index(b"f")
    c.process()
    [rs] = c.read_states[2]
    assert rs.index >= index


def test_read_on_a_deposed_leader_never_returns() -> None:
    c = Cluster(3, check_quorum=False)
    c.elect(1)
    c.propose(1, b"a")
    c.isolate(1)
    c.elect(2)
    newer = c.propose(2, b"b")
    c.cores[1].read_index(b"stale?")
    c.process()
    assert c.read_states[1] == []
    c.cores[2].read_index(b"fresh")
    c.process()
    [rs] = c.read_states[2]
    assert rs.index >= newer


def test_new_leader_waits_for_its_first_commit_before_serving_reads() -> None:
    c = Cluster(3, check_quorum=False)
    c.elect(1)
    c.propose(1, b"a")
    c.isolate(1)
    c.drop_if = lambda m: m.type is MessageType.APPEND and m.frm == 2
    c.elect(2)
    c.cores[2].read_index(b"early")
    c.process()
    assert c.read_states[2] == [], "no read before the leader commits in its own term"
    c.drop_if = lambda m: False
    c.tick(2, times=3)
    [rs] = c.read_states[2]
    assert c.cores[2].log.term(rs.index) == c.cores[2].term


def test_read_without_known_leader_is_refused() -> None:
    c = Cluster(3)
    with pytest.raises(NotLeaderError):
        c.cores[1].read_index(b"x")
