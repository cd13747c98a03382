"""The leader's clock for leases: keep-alives in memory, expiries proposed to the log.

Pure: the caller passes the current monotonic time in milliseconds. A keep-alive
only moves a deadline here, so renewing 10,000 leases a second costs no log writes;
grants, revocations, expiries and periodic checkpoints are the only lease commands
that go through the log.
"""

from __future__ import annotations

import heapq

from hacoord.coord.errors import LeaseNotFoundError
from hacoord.coord.leases import LeaseTable


class LeaseClock:
    """Deadlines of every lease, valid only on the current leader."""

    def __init__(self) -> None:
        self._deadline: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []
        self._proposed: set[int] = set()

    def become_leader(self, table: LeaseTable, now_ms: float) -> None:
        """Start timing every lease afresh: each gets its full TTL from now.

        A new leader cannot know when the last keep-alive reached its predecessor, so
        it must not expire anything early: failing over never costs a holder its lease.
        """
        self._deadline.clear()
        self._heap.clear()
        self._proposed.clear()
        for lease in table.leases.values():
            self._set(lease.id, now_ms + lease.ttl_ms)

    def step_down(self) -> None:
        """Forget all deadlines: only a leader times leases."""
        self._deadline.clear()
        self._heap.clear()
        self._proposed.clear()

    def granted(self, lease_id: int, ttl_ms: int, now_ms: float) -> None:
        """A grant was applied while we lead."""
        self._set(lease_id, now_ms + ttl_ms)

    def removed(self, lease_id: int) -> None:
        """A lease was revoked or expired."""
        self._deadline.pop(lease_id, None)
        self._proposed.discard(lease_id)

    def keep_alive(self, table: LeaseTable, lease_id: int, now_ms: float) -> int:
        """Renew ``lease_id`` for its full TTL; returns the TTL in milliseconds."""
        lease = table.get(lease_id)
        if lease_id in self._proposed:
            raise LeaseNotFoundError(lease_id)  # its expiry is already on the way
        self._set(lease_id, now_ms + lease.ttl_ms)
        return lease.ttl_ms

    def remaining_ms(self, lease_id: int, now_ms: float) -> int | None:
        """Time left on ``lease_id``, or ``None`` when this clock does not time it."""
        deadline = self._deadline.get(lease_id)
        return None if deadline is None else max(0, int(deadline - now_ms))

    def expired(self, now_ms: float) -> list[int]:
        """Leases whose deadline passed and whose expiry has not been proposed yet.

        Each is reported once; the caller proposes a ``LeaseExpire`` for it.
        """
        out = []
        while self._heap and self._heap[0][0] <= now_ms:
            deadline, lease_id = heapq.heappop(self._heap)
            if self._deadline.get(lease_id) != deadline or lease_id in self._proposed:
                continue  # renewed since, or already reported
            self._proposed.add(lease_id)
            out.append(lease_id)
        return out

    def retry_expiry(self, lease_id: int, now_ms: float) -> None:
        """The expiry proposal was lost: report the lease again on the next check."""
        if lease_id in self._proposed:
            self._proposed.discard(lease_id)
            self._set(lease_id, now_ms)

    def checkpoint(self, now_ms: float) -> list[tuple[int, int]]:
        """Remaining time of every timed lease, for a ``LeaseCheckpoint`` command."""
        return sorted(
            (lease_id, max(0, int(deadline - now_ms)))
            for lease_id, deadline in self._deadline.items()
            if lease_id not in self._proposed
        )

    def _set(self, lease_id: int, deadline: float) -> None:
        self._deadline[lease_id] = deadline
        heapq.heappush(self._heap, (deadline, lease_id))
