"""What a coordination simulation records for its checkers (plain data, no behaviour).

Times are virtual milliseconds on the one global clock every simulated process
shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hacoord.raft.types import NodeId

INF = math.inf

REASON_DEADLINE = "no keep-alive succeeded within the TTL"
REASON_NOT_FOUND = "the cluster says the lease no longer exists"
REASON_LATE = "the keep-alive was answered only after the deadline"
REASON_STOPPED = "keep-alives stopped"


@dataclass(slots=True)
class LeaseRecord:
    """One lease as its client saw it, and what the cluster did to it."""

    lease_id: int
    client: int
    ttl_ms: int
    requested_at: float
    """When the client sent the grant (first attempt)."""
    granted_at: float
    """When the grant's answer reached the client."""
    deadline: float
    """The client's deadline: valid while ``now < deadline`` (final once lost)."""
    lost_at: float = INF
    """When the client marked the lease lost."""
    lost_reason: str = ""
    stopped_at: float = INF
    """When the client stopped renewing on purpose (resign, revoke)."""
    expiry_proposed_at: float = INF
    """When the leader proposed the expiry that committed (INF: none committed)."""
    expired_at: float = INF
    """When that expiry was first applied."""

    def end(self) -> float:
        """Until when the client could count on the lease."""
        return min(self.deadline, self.lost_at)


@dataclass(slots=True)
class HolderSpan:
    """A client's belief that it holds an election: from when its campaign saw itself
    elected until its lease ended or it began to resign."""

    election: str
    client: int
    lease: LeaseRecord
    token: int
    start: float
    resigned_at: float = INF

    def end(self) -> float:
        """The end of the span (the client-side lease deadline at the latest)."""
        return min(self.lease.end(), self.resigned_at)


@dataclass(frozen=True, slots=True)
class FencedWrite:
    """A ``while_holding`` transaction that succeeded."""

    election: str
    client: int
    token: int
    revision: int


@dataclass(frozen=True, slots=True)
class ClientFault:
    """A fault of one client: ``pause`` (the process hangs) or ``cut`` (its links to
    ``members`` are down, in one or both directions)."""

    kind: str
    client: int
    start: float
    end: float
    members: frozenset[NodeId] = frozenset()


@dataclass(slots=True)
class CoordHistory:
    """Everything the coordination checkers look at."""

    leases: dict[int, LeaseRecord] = field(default_factory=dict)
    spans: list[HolderSpan] = field(default_factory=list)
    fenced: list[FencedWrite] = field(default_factory=list)
    client_faults: list[ClientFault] = field(default_factory=list)
    expiries: int = 0
    """Expiries committed (of any lease)."""
    recampaigns: int = 0
