"""The leader's view of each follower's replication progress."""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    """How the leader currently replicates to a follower."""

    PROBE = 0
    """One append at a time until the match point is known (follower behind or unreachable)."""
    REPLICATE = 1
    """Optimistic pipelining with a bounded window of in-flight appends."""
    SNAPSHOT = 2
    """A snapshot is in flight; appends pause until it is acknowledged or fails."""


class Progress:
    """Replication progress of one follower (or learner), tracked by the leader."""

    __slots__ = (
        "inflight",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        self.max_inflight = max_inflight
        self.inflight: deque[int] = deque()

    def is_paused(self) -> bool:
        """Whether the leader must hold further appends to this follower."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def become_probe(self) -> None:
        """Fall back to probing (after a rejection, or after a snapshot was applied)."""
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        """Start pipelining from just after the known match point."""
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, snapshot_index: int) -> None:
        """Pause appends while a snapshot up to ``snapshot_index`` is sent."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """Record that the follower stores everything up to ``index``; True if news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def sent_entries(self, last_index: int) -> None:
        """Account for an append carrying entries up to ``last_index``."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflight.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def free_inflight_through(self, index: int) -> None:
        """Release in-flight slots for appends acknowledged up to ``index``."""
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()

    def maybe_decrease(self, rejected: int, probe_hint: int) -> bool:
        """Handle a rejected append at ``rejected``; False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, probe_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
