"""Raft paper section 5.3 (log replication) and the batching/pipelining machinery."""

from hacoord.raft.progress import ProgressState
from hacoord.raft.types import EntryKind, MessageType
from harness import Cluster


def test_proposals_replicate_and_apply_in_order_everywhere() -> None:
    c = Cluster(5)
    c.elect(1)
    for i in range(20):
        c.propose(1, b"v%d" % i)
    expected = [b"v%d" % i for i in range(20)]
    for nid in c.ids:
        assert c.data_applied(nid) == expected


def test_new_leader_appends_a_noop_of_its_term() -> None:
    c = Cluster(3)
    c.elect(2)
    noop = [e for e in c.applied[2] if e.kind is EntryKind.NOOP]
    assert noop and noop[-1].term == c.cores[2].term


def test_follower_with_conflicting_suffix_is_repaired_with_few_round_trips() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect(1)
    c.propose(1, b"base")
    # Leader 1 appends 30 entries that reach nobody.
    c.isolate(1)
    for i in range(30):
        c.cores[1].propose(b"lost%d" % i)
    c.process()
    c.elect(2)
    for i in range(30):
        c.propose(2, b"won%d" % i)
    # A third leader starts probing node 1 at its own (long) log's end.
    c.elect(3)
    c.heal()
    c.sent.clear()
    c.tick(times=3)
    assert c.cores[1].role.name == "FOLLOWER"
    assert c.data_applied(1)[-30:] == [b"won%d" % i for i in range(30)]
    rejects = [m for m in c.sent if m.type is MessageType.APPEND_RESP and m.frm == 1 and m.reject]
    # Fast back-off by term: one rejection skips the whole conflicting term.
    assert 1 <= len(rejects) <= 2


def test_append_messages_are_bounded_in_bytes() -> None:
    c = Cluster(3, max_msg_bytes=4096)
    c.elect(1)
    c.sent.clear()
    c.cores[1].propose_batch([b"x" * 1000 for _ in range(40)])
    c.process()
    appends = [m for m in c.sent if m.type is MessageType.APPEND and m.entries]
    assert appends
    assert all(sum(len(e.data) for e in m.entries) <= 4096 for m in appends)
    assert max(len(m.entries) for m in appends) > 1
    assert len(c.data_applied(3)) == 40


def test_pipelining_stops_at_the_inflight_window() -> None:
    c = Cluster(3, max_inflight=4, max_msg_bytes=1024)
    c.elect(1)
    c.dropped_types = {MessageType.APPEND_RESP}
    c.sent.clear()
    c.cores[1].propose_batch([b"y" * 900 for _ in range(20)])
    c.process()
    to_2 = [m for m in c.sent if m.type is MessageType.APPEND and m.to == 2 and m.entries]
    assert len(to_2) == 4
    assert c.cores[1].progress[2].is_paused()


def test_unreachable_follower_drops_to_probe_and_recovers() -> None:
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    assert c.cores[1].progress[3].state is ProgressState.REPLICATE
    c.cores[1].report_unreachable(3)
    assert c.cores[1].progress[3].state is ProgressState.PROBE
    c.propose(1, b"b")
    c.tick(1, times=3)
    assert c.cores[1].progress[3].state is ProgressState.REPLICATE
    assert c.data_applied(3) == [b"a", b"b"]


def test_crashed_follower_restarts_and_catches_up() -> None:
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    c.crash(3)
    for i in range(5):
        c.propose(1, b"b%d" % i)
    c.start(3)
    c.tick(times=5)
    assert c.data_applied(3)[-5:] == [b"b%d" % i for i in range(5)]


def test_follower_far_behind_receives_a_snapshot() -> None:
    c = Cluster(3)
    c.elect(1)
    c.crash(3)
    for i in range(10):
        c.propose(1, b"v%d" % i)
    c.compact(1)
    c.start(3)
    c.sent.clear()
    c.tick(times=5)
    snaps = [m for m in c.sent if m.type is MessageType.SNAPSHOT and m.to == 3]
    assert len(snaps) == 1
    assert c.cores[3].log.snapshot_index == c.cores[1].log.snapshot_index
    assert c.cores[1].progress[3].state is ProgressState.REPLICATE
    c.propose(1, b"after")
    assert c.data_applied(3)[-1] == b"after"
