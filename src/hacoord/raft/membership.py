"""Membership configurations as log entries.

A CONFIG entry carries ``[voters, learners, voters_outgoing, context]`` as msgpack;
``context`` is opaque to the core (the server layer stores member addresses there).
Voter changes go through a joint configuration (old and new majorities both
required) that the leader leaves automatically once it is applied; learner-only
changes take one step.
"""

from __future__ import annotations

import msgpack

from hacoord.raft.errors import RaftError
from hacoord.raft.types import ConfState, NodeId


def encode_conf(conf: ConfState, context: bytes = b"") -> bytes:
    """Entry data for ``conf``."""
    packed: bytes = msgpack.packb(
        [sorted(conf.voters), sorted(conf.learners), sorted(conf.voters_outgoing), context]
    )
    return packed


def decode_conf(data: bytes) -> tuple[ConfState, bytes]:
    """Inverse of :func:`encode_conf`; raises RaftError on malformed data."""
    try:
        voters, learners, outgoing, context = msgpack.unpackb(data)
        conf = ConfState(
            frozenset(int(v) for v in voters),
            frozenset(int(v) for v in learners),
            frozenset(int(v) for v in outgoing),
        )
        return conf, bytes(context)
    except Exception as exc:
        raise RaftError(f"malformed configuration entry: {exc}") from exc


def validate_target(
    current: ConfState, voters: frozenset[NodeId], learners: frozenset[NodeId]
) -> None:
    """Refuse target configurations the core cannot reach safely."""
    if current.voters_outgoing:
        raise RaftError("a joint configuration is still being left; retry shortly")
    if not voters:
        raise RaftError("a configuration needs at least one voter")
    if any(n <= 0 for n in voters | learners):
        raise RaftError("member ids must be positive integers")
    overlap = voters & learners
    if overlap:
        raise RaftError(f"members {sorted(overlap)} cannot be both voter and learner")
    demoted = (current.voters - voters) & learners
    if demoted:
        raise RaftError(
            f"members {sorted(demoted)} cannot go from voter to learner in one change; "
            "remove them first, then add them as learners"
        )


def next_conf(
    current: ConfState, voters: frozenset[NodeId], learners: frozenset[NodeId]
) -> ConfState:
    """The configuration to propose: joint when the voter set changes."""
    validate_target(current, voters, learners)
    if voters == current.voters:
        return ConfState(voters, learners)
    return ConfState(voters, learners, current.voters)
