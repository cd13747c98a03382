"""The core's in-memory view of the Raft log.

Holds the entries after the latest snapshot, and three cursors: ``stable`` (the
last index the driver has made durable), ``committed`` and ``applied``. The driver
bounds memory by compacting after each state-machine snapshot.
"""

from __future__ import annotations

from hacoord.raft.errors import RaftError
from hacoord.raft.types import Entry, Snapshot


class RaftLog:
    """Entries after ``snapshot_index`` plus the stable/commit/apply cursors."""

    __slots__ = ("applied", "committed", "entries", "snapshot_index", "snapshot_term", "stable")

    def __init__(
        self,
        snapshot_index: int = 0,
        snapshot_term: int = 0,
        entries: list[Entry] | None = None,
        committed: int = 0,
    ) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.entries: list[Entry] = list(entries or [])
        for offset, entry in enumerate(self.entries):
            if entry.index != snapshot_index + 1 + offset:
                raise RaftError(
                    f"recovered log is not contiguous: expected index "
                    f"{snapshot_index + 1 + offset}, found {entry.index}"
                )
        self.stable = self.last_index()
        if committed > self.last_index():
            raise RaftError(
                f"recovered commit index {committed} is beyond the last stored entry "
                f"{self.last_index()}: the log lost acknowledged entries"
            )
        self.committed = max(committed, snapshot_index)
        self.applied = snapshot_index

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index when the log is empty)."""
        return self.snapshot_index + len(self.entries)

    def first_index(self) -> int:
        """Index of the first entry still held (snapshot index + 1)."""
        return self.snapshot_index + 1

    def last_term(self) -> int:
        """Term of the last entry."""
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``, or None if compacted away or not present."""
        if index == self.snapshot_index:
            return self.snapshot_term
        offset = index - self.snapshot_index - 1
        if offset < 0 or offset >= len(self.entries):
            return None
        return self.entries[offset].term

    def match_term(self, index: int, term: int) -> bool:
        """Whether the entry at ``index`` exists and has ``term``."""
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a candidate's log (last index/term) is at least as up to date as ours."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry] | None:
        """Entries in [lo, hi), at least one, at most ``max_bytes``; None if compacted."""
        if lo <= self.snapshot_index:
            return None
        start = lo - self.snapshot_index - 1
        stop = min(hi, self.last_index() + 1) - self.snapshot_index - 1
        if start >= stop:
            return []
        out: list[Entry] = []
        size = 0
        for entry in self.entries[start:stop]:
            size += entry.size()
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries``, truncating any existing suffix they overwrite."""
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise RaftError(
                f"refusing to overwrite committed entry {first} (commit {self.committed})"
            )
        if first > self.last_index() + 1:
            raise RaftError(f"gap in log: appending {first} after {self.last_index()}")
        del self.entries[first - self.snapshot_index - 1 :]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)

    def find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first entry that is new or disagrees with the log; 0 if none."""
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def maybe_append(
        self, prev_index: int, prev_term: int, leader_commit: int, entries: list[Entry]
    ) -> int | None:
        """Apply a leader's append; the last index now known to match, or None on mismatch."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term`` (fast back-off hint)."""
        while True:
            t = self.term(index)
            if t is None:
                return index, 0
            if t <= term:
                return index, t
            index -= 1

    def commit_to(self, index: int) -> bool:
        """Advance the commit index (never backwards); True if it moved."""
        if index > self.committed:
            if index > self.last_index():
                raise RaftError(f"commit index {index} beyond last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def unstable_entries(self) -> list[Entry]:
        """Entries not yet reported durable by the driver."""
        return self.entries[self.stable - self.snapshot_index :]

    def stable_to(self, index: int, term: int) -> None:
        """Mark entries up to ``index`` durable, if the log still holds them with ``term``."""
        if self.match_term(index, term) and index > self.stable:
            self.stable = index

    def applicable_entries(self) -> list[Entry]:
        """Committed, durable entries not yet handed out for applying."""
        hi = min(self.committed, self.stable)
        lo = max(self.applied, self.snapshot_index)
        if hi <= lo:
            return []
        return self.entries[lo - self.snapshot_index : hi - self.snapshot_index]

    def applied_to(self, index: int) -> None:
        """Record that the state machine has applied entries up to ``index``."""
        if index > self.applied:
            self.applied = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (a follower installing the leader's)."""
        self.entries = []
        self.snapshot_index = snapshot.meta.index
        self.snapshot_term = snapshot.meta.term
        self.committed = snapshot.meta.index
        self.stable = snapshot.meta.index

    def compact(self, index: int, term: int) -> None:
        """Drop entries up to ``index`` (covered by a snapshot the driver has stored)."""
        if index <= self.snapshot_index:
            return
        if index > self.applied:
            raise RaftError(f"cannot compact to {index}: only {self.applied} applied")
        del self.entries[: index - self.snapshot_index]
        self.snapshot_index = index
        self.snapshot_term = term
