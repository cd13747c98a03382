"""Raft paper section 5.2 (leader election) and 5.4.1 (election restriction)."""

import random

import pytest

from hacoord.raft.config import CoreConfig
from hacoord.raft.core import RaftCore
from hacoord.raft.errors import ConfigError
from hacoord.raft.types import ConfState, MessageType, Role
from harness import Cluster


def test_a_follower_that_times_out_becomes_the_only_leader() -> None:
    c = Cluster(3)
    c.tick(times=25)
    assert len(c.leaders()) == 1
    leader = c.leaders()[0]
    terms = {c.cores[i].term for i in c.ids}
    assert len(terms) == 1
    assert all(c.cores[i].leader == leader for i in c.ids)


def test_election_timeout_is_randomized_within_t_to_2t() -> None:
    seen = set()
    for seed in range(200):
        core = RaftCore(
            CoreConfig(node_id=1, election_ticks=10),
            ConfState(frozenset({1, 2, 3})),
            random.Random(seed),
        )
        seen.add(core.randomized_timeout)
    assert min(seen) == 10
    assert max(seen) == 19


def test_single_node_elects_itself_and_commits_alone() -> None:
    c = Cluster(1)
    c.tick(times=20)
    assert c.leaders() == [1]
    c.propose(1, b"x")
    assert c.data_applied(1) == [b"x"]


def test_candidate_with_a_shorter_log_cannot_win() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.elect(1)
    c.isolate(3)
    c.propose(1, b"a")
    c.heal()
    # Node 3 missed "a": the others refuse to vote for it.
    c.cores[3].campaign()
    c.process()
    assert c.cores[3].role is not Role.LEADER
    refusals = [m for m in c.sent if m.type is MessageType.VOTE_RESP and m.to == 3 and m.reject]
    assert len(refusals) == 2


def test_a_node_votes_at_most_once_per_term() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.cut(1, 2)
    c.cores[1].campaign()
    c.cores[2].campaign()
    c.process()
    leaders = c.leaders()
    assert len(leaders) == 1
    granted = [m for m in c.sent if m.type is MessageType.VOTE_RESP and m.frm == 3 and not m.reject]
    assert len(granted) == 1


def test_vote_survives_restart() -> None:
    c = Cluster(3, pre_vote=False, check_quorum=False)
    c.isolate(1)
    c.cut(2, 1)
    c.cores[2].campaign()
    c.process()
    assert c.cores[3].vote == 2
    c.crash(3)
    c.start(3)
    assert c.cores[3].vote == 2 and c.cores[3].term == c.cores[2].term


def test_invalid_timing_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match="election_ticks"):
        CoreConfig(node_id=1, election_ticks=2, heartbeat_ticks=1)
    with pytest.raises(ConfigError, match="node_id"):
        CoreConfig(node_id=0)
