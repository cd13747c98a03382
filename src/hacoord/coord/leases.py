"""The replicated lease table: which leases exist and which keys they carry.

Deadlines are not replicated: only the leader keeps time (see
:mod:`hacoord.coord.lease_clock`) and proposes an expiry when a lease runs out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hacoord.coord.errors import LeaseNotFoundError


@dataclass(slots=True)
class Lease:
    """A granted lease; its id is the revision of the entry that granted it."""

    id: int
    ttl_ms: int
    keys: set[str] = field(default_factory=set)
    remaining_ms: int = 0
    """Remaining time at the last checkpoint (the TTL until the first checkpoint)."""


class LeaseTable:
    """Live leases by id."""

    def __init__(self) -> None:
        self.leases: dict[int, Lease] = {}

    def grant(self, lease_id: int, ttl_ms: int) -> Lease:
        """Create a lease (ids are log indexes, so never reused)."""
        lease = Lease(lease_id, ttl_ms, remaining_ms=ttl_ms)
        self.leases[lease_id] = lease
        return lease

    def get(self, lease_id: int) -> Lease:
        """The lease, or :class:`LeaseNotFoundError`."""
        lease = self.leases.get(lease_id)
        if lease is None:
            raise LeaseNotFoundError(lease_id)
        return lease

    def remove(self, lease_id: int) -> Lease:
        """Forget a lease; returns it so that its keys can be deleted."""
        lease = self.get(lease_id)
        del self.leases[lease_id]
        return lease

    def attach(self, key: str, old_lease: int, new_lease: int) -> None:
        """Move ``key`` from ``old_lease`` to ``new_lease`` (0 meaning none)."""
        if old_lease and old_lease in self.leases:
            self.leases[old_lease].keys.discard(key)
        if new_lease:
            self.leases[new_lease].keys.add(key)

    def detach(self, key: str, lease_id: int) -> None:
        """``key`` was deleted: its lease no longer carries it."""
        if lease_id and lease_id in self.leases:
            self.leases[lease_id].keys.discard(key)
