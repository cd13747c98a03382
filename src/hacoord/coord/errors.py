"""Errors of the coordination state machine.

Every refusal is deterministic: each replica refuses the same command with the same
error, and a refused command changes nothing.
"""

from __future__ import annotations

from hacoord.raft.errors import CommandRejectedError


class CoordError(CommandRejectedError):
    """Base class of every refusal from :mod:`hacoord.coord`."""


class InvalidCommandError(CoordError, ValueError):
    """The command is malformed: wrong shape, wrong type, or over a size limit."""


class LeaseNotFoundError(CoordError):
    """The lease does not exist (never granted, revoked, or expired)."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id} does not exist (never granted, revoked or expired)")
        self.lease_id = lease_id


class CompactedError(CoordError):
    """A watch asked for history older than what is still kept."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} is compacted: events up to revision {compacted} are "
            f"no longer kept; read the current state and watch from revision {compacted + 1}"
        )
        self.requested = requested
        self.compacted = compacted


class StaleSequenceError(CoordError):
    """A client sent a sequence number whose outcome the cluster no longer remembers."""

    def __init__(self, client_id: int, seq: int, last: int) -> None:
        super().__init__(
            f"client {client_id}: sequence number {seq} is below {last}, the oldest one "
            "still remembered; the request was already answered or abandoned"
        )
        self.client_id = client_id
        self.seq = seq
        self.last = last


class FencingTokenError(CoordError):
    """An action carried a fencing token lower than one the resource already accepted."""

    def __init__(self, resource: str, token: int, highest: int) -> None:
        super().__init__(
            f"{resource}: fencing token {token} is older than token {highest} already "
            "accepted; a newer holder has taken over, so this action is refused"
        )
        self.resource = resource
        self.token = token
        self.highest = highest
