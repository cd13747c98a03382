"""Quorum arithmetic, kept in one place so joint configurations count both majorities.

A configuration with ``voters_outgoing`` non-empty is a joint configuration: a
decision needs a majority of ``voters`` *and* a majority of ``voters_outgoing``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping

from hacoord.raft.types import ConfState, NodeId

_NO_LIMIT = 1 << 62


class VoteResult(enum.Enum):
    """Outcome of tallying votes."""

    PENDING = 0
    WON = 1
    LOST = 2


def _majority_index(voters: Collection[NodeId], index_of: Callable[[NodeId], int]) -> int:
    if not voters:
        return _NO_LIMIT
    values = sorted((index_of(v) for v in voters), reverse=True)
    return values[len(values) // 2]


def committed_index(conf: ConfState, index_of: Callable[[NodeId], int]) -> int:
    """The highest log index stored on a quorum, given each voter's match index."""
    idx = _majority_index(conf.voters, index_of)
    if conf.voters_outgoing:
        idx = min(idx, _majority_index(conf.voters_outgoing, index_of))
    return 0 if idx == _NO_LIMIT else idx


def _single_vote_result(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    granted = sum(1 for v in voters if votes.get(v) is True)
    missing = sum(1 for v in voters if v not in votes)
    need = len(voters) // 2 + 1
    if granted >= need:
        return VoteResult.WON
    if granted + missing >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


def vote_result(conf: ConfState, votes: Mapping[NodeId, bool]) -> VoteResult:
    """Tally ``votes`` (True = granted) against the configuration."""
    incoming = _single_vote_result(conf.voters, votes)
    outgoing = _single_vote_result(conf.voters_outgoing, votes)
    if incoming is VoteResult.LOST or outgoing is VoteResult.LOST:
        return VoteResult.LOST
    if incoming is VoteResult.WON and outgoing is VoteResult.WON:
        return VoteResult.WON
    return VoteResult.PENDING


def has_quorum(conf: ConfState, nodes: Collection[NodeId]) -> bool:
    """Whether ``nodes`` contains a quorum of the configuration."""
    return vote_result(conf, {n: True for n in nodes}) is VoteResult.WON
