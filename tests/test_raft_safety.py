"""Raft paper section 5.4 (safety) and the known failure modes PreVote/CheckQuorum fix."""

import pytest

from hacoord.raft.errors import NotLeaderError, ProposalDroppedError
from hacoord.raft.types import MessageType, Role
from harness import Cluster


def test_stale_leader_cannot_commit() -> None:
    c = Cluster(3, check_quorum=False)
    c.elect(1)
    c.isolate(1)
    index = c.cores[1].propose(b"never")
    c.process()
    assert c.cores[1].log.committed < index
    c.elect(2)
    c.propose(2, b"real")
    c.heal()
    c.tick(times=5)
    for nid in c.ids:
        assert b"never" not in c.data_applied(nid)
        assert c.data_applied(nid)[-1] == b"real"


def test_leader_does_not_commit_old_term_entries_by_counting_replicas() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=False, max_msg_bytes=1024)
    c.elect(1)
    c.isolate(1)
    old = c.cores[1].propose(b"o" * 1000)  # big enough to travel alone
    c.process()
    c.heal()
    c.crash(1)
    c.start(1)
    # Node 1 wins the next term; acknowledgements of its no-op are lost for now.
    c.drop_if = lambda m: m.type is MessageType.APPEND_RESP and not m.reject and m.index > old
    c.elect(1)
    assert c.cores[1].progress[2].match == old, "the old entry is on a majority"
    assert c.cores[1].log.term(old) < c.cores[1].term
    assert c.cores[1].log.committed < old, "old-term entries must not commit by counting"
    c.drop_if = lambda m: False
    c.tick(1, times=2)
    assert c.cores[1].log.committed == old + 1
    assert c.data_applied(2)[-1] == b"o" * 1000


def test_partitioned_node_rejoining_does_not_disrupt_the_leader_with_prevote() -> None:
    c = Cluster(3, pre_vote=True, check_quorum=True)
    c.elect(1)
    term = c.cores[1].term
    c.isolate(3)
    c.tick(3, times=100)
    assert c.cores[3].term == term, "PreVote must stop the isolated node from bumping its term"
    c.heal()
    c.tick(times=5)
    assert c.leaders() == [1]
    assert c.cores[1].term == term


def test_without_prevote_a_rejoining_node_does_disrupt() -> None:
    """Control for the test above: the disruption is real when PreVote is off."""
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect(1)
    term = c.cores[1].term
    c.isolate(3)
    c.tick(3, times=100)
    assert c.cores[3].term > term
    c.heal()
    c.tick(times=30)
    assert c.cores[1].term > term


def test_isolated_leader_steps_down_within_an_election_timeout() -> None:
    c = Cluster(3, election_ticks=10)
    c.elect(1)
    c.isolate(1)
    for _ in range(2 * 10):
        c.tick(1)
        if c.cores[1].role is not Role.LEADER:
            break
    assert c.cores[1].role is Role.FOLLOWER
    with pytest.raises(NotLeaderError):
        c.cores[1].propose(b"x")


def test_followers_with_a_live_leader_ignore_vote_requests() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=True)
    c.elect(1)
    term = c.cores[1].term
    c.cores[3].campaign()  # a disruptive candidate at term + 1
    c.process()
    assert c.cores[1].role is Role.LEADER or c.cores[2].term == term
    assert c.cores[2].vote != 3


def test_leadership_transfer_finishes() -> None:
    c = Cluster(3)
    c.elect(1)
    c.propose(1, b"a")
    c.cores[1].transfer_leadership(3)
    c.process()
    assert c.leaders() == [3]
    c.propose(3, b"b")
    assert c.data_applied(1)[-1] == b"b"


def test_leadership_transfer_catches_a_lagging_target_up_first() -> None:
    c = Cluster(3)
    c.elect(1)
    c.crash(3)
    for i in range(5):
        c.propose(1, b"v%d" % i)
    c.start(3)
    c.cores[1].transfer_leadership(3)
    with pytest.raises(ProposalDroppedError):
        c.cores[1].propose(b"refused during transfer")
    c.process()
    c.tick(times=3)
    assert c.leaders() == [3]
    assert c.data_applied(3)[-5:] == [b"v%d" % i for i in range(5)]


def test_leadership_transfer_aborts_within_an_election_timeout() -> None:
    c = Cluster(3, election_ticks=10)
    c.elect(1)
    c.cut(1, 3)
    c.cores[1].transfer_leadership(3)
    assert c.cores[1].lead_transferee == 3
    for _ in range(10):
        c.tick(1)
    assert c.cores[1].lead_transferee == 0
    assert c.leaders() == [1]
    c.propose(1, b"accepted again")
    assert c.data_applied(2)[-1] == b"accepted again"
