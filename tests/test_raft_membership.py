"""Membership changes in the core: joint consensus, learners, removal, replacement."""

import random

import pytest

from hacoord.raft.config import CoreConfig
from hacoord.raft.core import RaftCore
from hacoord.raft.errors import ProposalDroppedError, RaftError
from hacoord.raft.types import ConfState, EntryKind, Message, MessageType, Role
from hacoord.sim.invariants import InvariantChecker
from harness import Cluster


def _configs(c: Cluster, nid: int) -> list[ConfState]:
    from hacoord.raft.membership import decode_conf

    return [decode_conf(e.data)[0] for e in c.applied[nid] if e.kind is EntryKind.CONFIG]


def test_adding_a_voter_goes_through_a_joint_configuration_and_leaves_it() -> None:
    c = Cluster(4, voters={1, 2, 3})
    c.elect(1)
    c.propose(1, b"before")
    c.cores[1].propose_conf_change(frozenset({1, 2, 3, 4}), frozenset())
    c.process()
    c.tick(times=2)
    confs = _configs(c, 1)
    assert confs[0] == ConfState(frozenset({1, 2, 3, 4}), frozenset(), frozenset({1, 2, 3}))
    assert confs[-1] == ConfState(frozenset({1, 2, 3, 4}))
    for nid in c.ids:
        assert c.cores[nid].conf == ConfState(frozenset({1, 2, 3, 4}))
    assert c.data_applied(4) == [b"before"]


def test_a_second_change_waits_for_the_first() -> None:
    c = Cluster(5, voters={1, 2, 3})
    c.elect(1)
    c.isolate(2)
    c.isolate(3)  # nothing can commit
    c.cores[1].propose_conf_change(frozenset({1, 2, 3, 4}), frozenset())
    with pytest.raises(ProposalDroppedError, match="still in progress"):
        c.cores[1].propose_conf_change(frozenset({1, 2, 3, 5}), frozenset())


def test_joint_configuration_needs_both_majorities() -> None:
    # Replace 3 voters by 3 new ones; the new ones are unreachable, so the joint
    # configuration must not commit anything with the old majority alone.
    c = Cluster(6, voters={1, 2, 3})
    c.elect(1)
    for new in (4, 5, 6):
        c.isolate(new)
    c.cores[1].propose_conf_change(frozenset({4, 5, 6}), frozenset())
    c.process()
    c.tick(times=3)
    assert c.cores[1].conf.voters_outgoing == frozenset({1, 2, 3})
    index = c.cores[1].propose(b"needs new majority too")
    c.process()
    assert c.cores[1].log.committed < index
    c.heal()
    c.tick(times=5)
    assert c.data_applied(4)[-1] == b"needs new majority too"


def test_learners_replicate_but_never_vote_or_count() -> None:
    c = Cluster(4, voters={1, 2, 3})
    c.elect(1)
    c.cores[1].propose_conf_change(frozenset({1, 2, 3}), frozenset({4}))
    c.process()
    c.propose(1, b"x")
    assert c.data_applied(4) == [b"x"]
    assert c.cores[4].conf.learners == frozenset({4})
    c.isolate(2)
    c.isolate(3)
    index = c.cores[1].propose(b"y")
    c.process()
    assert c.cores[1].log.committed < index, "a learner's ack must not count"
    c.heal()
    c.crash(1)
    c.tick(4, times=50)
    assert c.cores[4].role is Role.FOLLOWER, "a learner never campaigns"
    sent_votes = [
        m for m in c.sent if m.frm == 4 and m.type in (MessageType.VOTE, MessageType.PRE_VOTE)
    ]
    assert sent_votes == []


def test_removed_leader_hands_over_and_steps_down() -> None:
    c = Cluster(4, voters={1, 2, 3, 4})
    c.elect(1)
    c.propose(1, b"a")
    c.cores[1].propose_conf_change(frozenset({2, 3, 4}), frozenset())
    c.process()
    c.tick(times=3)
    leaders = c.leaders()
    assert len(leaders) == 1 and leaders[0] != 1
    assert not c.cores[1].conf.is_voter(1)
    c.propose(leaders[0], b"b")
    assert c.data_applied(2)[-1] == b"b"


def test_removed_member_cannot_disrupt() -> None:
    checker = InvariantChecker()
    c = Cluster(4, voters={1, 2, 3, 4}, checker=checker, pre_vote=False, check_quorum=False)
    c.elect(1)
    c.isolate(4)  # 4 never learns it was removed
    c.cores[1].propose_conf_change(frozenset({1, 2, 3}), frozenset())
    c.process()
    c.tick(1, times=3)
    term = c.cores[1].term
    c.heal()
    c.cut(1, 4)
    for _ in range(5):
        c.cores[4].campaign()
        c.process()
    assert c.cores[1].role is Role.LEADER and c.cores[1].term == term
    assert c.cores[2].term == term, "vote requests from a removed member are ignored"
    assert checker.violations == []


def test_replacing_every_member_one_by_one_keeps_the_data() -> None:
    c = Cluster(6, voters={1, 2, 3})
    c.elect(1)
    c.propose(1, b"keep me")
    for old, new in ((2, 4), (3, 5), (1, 6)):
        leader = c.leaders()[0]
        voters = (c.cores[leader].conf.voters - {old}) | {new}
        c.cores[leader].propose_conf_change(frozenset(voters), frozenset())
        c.process()
        c.tick(times=4)
    leader = c.leaders()[0]
    assert c.cores[leader].conf == ConfState(frozenset({4, 5, 6}))
    assert leader in {4, 5, 6}
    c.propose(leader, b"new era")
    assert c.data_applied(6)[-2:] == [b"keep me", b"new era"]


def test_invalid_targets_are_refused() -> None:
    c = Cluster(3)
    c.elect(1)
    with pytest.raises(RaftError, match="at least one voter"):
        c.cores[1].propose_conf_change(frozenset(), frozenset())
    with pytest.raises(RaftError, match="both voter and learner"):
        c.cores[1].propose_conf_change(frozenset({1, 2}), frozenset({2}))
    with pytest.raises(RaftError, match="voter to learner"):
        c.cores[1].propose_conf_change(frozenset({1, 2}), frozenset({3}))


def test_configuration_survives_restart() -> None:
    c = Cluster(4, voters={1, 2, 3})
    c.elect(1)
    c.cores[1].propose_conf_change(frozenset({1, 2, 3, 4}), frozenset())
    c.process()
    c.tick(times=2)
    c.crash(2)
    c.start(2)
    c.process()
    assert c.cores[2].conf == ConfState(frozenset({1, 2, 3, 4}))


def _vote_replies(core: RaftCore) -> list[Message]:
    rd = core.ready()
    core.advance(rd)
    return [
        m
        for m in rd.early_messages + rd.messages
        if m.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP)
    ]


def test_a_node_with_a_stale_configuration_still_votes_for_an_unknown_candidate() -> None:
    # Seed 3142's deadlock: node 1 lost its log and restarted with the bootstrap
    # configuration {1, 2, 3}; the cluster has since become {1, 3, 4} and node 4 is the
    # only candidate that can win. Refusing 4 because "4 is not a voter" blocked every
    # election for good.
    stale = RaftCore(CoreConfig(node_id=1), ConfState(frozenset({1, 2, 3})), random.Random(1))
    for kind in (MessageType.PRE_VOTE, MessageType.VOTE):
        stale.step(Message(kind, to=1, frm=4, term=2, log_term=1, index=22))
        replies = _vote_replies(stale)
        assert [(m.type, m.to, m.reject) for m in replies] == [
            (
                MessageType.PRE_VOTE_RESP
                if kind is MessageType.PRE_VOTE
                else MessageType.VOTE_RESP,
                4,
                False,
            )
        ]


def test_a_node_with_a_live_leader_ignores_a_non_member_candidate() -> None:
    core = RaftCore(CoreConfig(node_id=1), ConfState(frozenset({1, 2, 3})), random.Random(1))
    core.step(Message(MessageType.HEARTBEAT, to=1, frm=2, term=1))
    _vote_replies(core)
    core.step(Message(MessageType.VOTE, to=1, frm=4, term=1, log_term=1, index=50))
    assert _vote_replies(core) == []
    assert core.vote == 0 and core.leader == 2
