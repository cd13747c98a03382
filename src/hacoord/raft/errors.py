"""Errors raised by the Raft layer."""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by :mod:`hacoord.raft`."""


class NotLeaderError(RaftError):
    """The request needs the leader and this node is not it.

    ``leader`` is the current leader's id when known, else 0, so callers can redirect.
    """

    def __init__(self, node: int, leader: int) -> None:
        hint = f"; the leader is node {leader}" if leader else "; no leader is known yet"
        super().__init__(f"node {node} is not the leader{hint}")
        self.node = node
        self.leader = leader


class ProposalDroppedError(RaftError):
    """The proposal was not accepted (leadership transfer in progress, or config busy)."""


class CommandRejectedError(RaftError):
    """The state machine refused a committed command, deterministically and without change.

    Raised from ``StateMachine.apply`` for bad requests (as opposed to bugs); the node
    hands it to the proposer without logging a stack trace.
    """


class ConfigError(RaftError, ValueError):
    """A configuration value is invalid; the message names the field and the rule."""


class StorageCorruptError(RaftError):
    """Stored Raft state is corrupt somewhere other than a torn tail; start-up must stop."""

    def __init__(self, path: str, offset: int, problem: str, advice: str) -> None:
        super().__init__(f"{path} at byte offset {offset}: {problem}. {advice}")
        self.path = path
        self.offset = offset
        self.problem = problem
