"""Bugs the coordination simulation can plant, to show that each checker can fail.

None of these is reachable from production code: they are variants of the simulated
member and client, or a :class:`~hacoord.coord.lease_clock.LeaseClock` subclass handed
to the keeper through its constructor.

========================  ===================================================  ========
name                      what is broken                                       caught by
========================  ===================================================  ========
unconfirmed_keepalive     the leader renews without a ReadIndex round          (a), (c)
token_from_lease          the campaign takes the lease id as the fencing token  (b)
lookup_before_timing      a member that has not applied the grant says          (c)
                          "lease not found" (the bug fixed in 9f0dd85)
checkpoint_restore        a new leader resumes the last checkpoint's remaining  (a)
                          time instead of giving every lease its full TTL
========================  ===================================================  ========
"""

from __future__ import annotations

from hacoord.coord.election import Holder
from hacoord.coord.lease_clock import LeaseClock
from hacoord.coord.leases import LeaseTable
from hacoord.coord.results import KeyValue

BUGS = (
    "unconfirmed_keepalive",
    "token_from_lease",
    "lookup_before_timing",
    "checkpoint_restore",
)


class CheckpointRestoringClock(LeaseClock):
    """Planted bug: a new leader trusts the old leader's last checkpoint."""

    def become_leader(self, table: LeaseTable, now_ms: float) -> None:
        """Time every lease from its checkpointed remaining time."""
        super().become_leader(table, now_ms)
        for lease in table.leases.values():
            self._set(lease.id, now_ms + lease.remaining_ms)


def holder_with_lease_token(candidates: tuple[KeyValue, ...]) -> Holder | None:
    """Planted bug: the right holder, but its lease id (which does not grow from one
    holder to the next) as the token."""
    if not candidates:
        return None
    kv = min(candidates, key=lambda c: c.create_revision)
    return Holder(kv.key, kv.value, kv.lease, kv.lease)


def check_names(names: frozenset[str]) -> None:
    """Refuse unknown bug names."""
    unknown = sorted(names - set(BUGS))
    if unknown:
        raise ValueError(f"unknown planted bug(s) {unknown}; known: {', '.join(BUGS)}")
