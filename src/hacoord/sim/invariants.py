"""Raft safety invariants checked by the simulator after every step.

* Election safety: at most one leader per term.
* Log matching: an (index, term) pair identifies the same entry, and the same
  predecessor term, on every node (by induction the whole prefix matches).
* Leader completeness: a new leader of term T holds every entry committed in a
  term before T. (A slow candidate can still win an old term after newer terms
  committed entries; such a stale leader can never commit, and is not required to
  hold entries committed later.)
* State machine safety: every node applies the same entry at each index, in order,
  and no committed entry is ever replaced (which also catches lost commits).
"""

from __future__ import annotations

from hacoord.raft.log import RaftLog
from hacoord.raft.types import Entry, NodeId


class InvariantChecker:
    """Collects violations; ``violations`` is empty while the run is safe."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.leaders: dict[int, NodeId] = {}
        self._entry_ids: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        self.committed: dict[int, int] = {}
        """index -> term of every entry known to be committed."""
        self.commit_term: dict[int, int] = {}
        """index -> the (earliest observed) term in which the entry was committed."""
        self.max_committed = 0
        self._applied: dict[int, tuple[int, bytes]] = {}
        self._last_applied: dict[NodeId, int] = {}
        self._checked_commit: dict[NodeId, int] = {}

    def _fail(self, text: str) -> None:
        self.violations.append(text)

    def on_leader(self, node: NodeId, term: int, log: RaftLog) -> None:
        """``node`` is leader of ``term``: check election safety and leader completeness."""
        other = self.leaders.setdefault(term, node)
        if other != node:
            self._fail(f"election safety: nodes {other} and {node} both lead term {term}")
            return
        for index in range(max(log.snapshot_index + 1, 1), self.max_committed + 1):
            want = self.committed.get(index)
            if want is None or self.commit_term.get(index, term) >= term:
                continue  # committed in this term or later: not required of this leader
            have = log.term(index)
            if have != want:
                self._fail(
                    f"leader completeness: leader {node} of term {term} has term {have} at "
                    f"index {index}, committed entry has term {want}"
                )
                return

    def on_entries(self, node: NodeId, prev_term: int, entries: list[Entry]) -> None:
        """``node`` stored ``entries``; ``prev_term`` is the term of the entry before them."""
        for entry in entries:
            ident = (entry.index, entry.term)
            seen = self._entry_ids.get(ident)
            mine = (entry.data, int(entry.kind), prev_term)
            if seen is None:
                self._entry_ids[ident] = mine
            elif seen != mine:
                self._fail(
                    f"log matching: node {node} holds a different entry or predecessor at "
                    f"index {entry.index} term {entry.term}"
                )
            prev_term = entry.term

    def on_commit(self, node: NodeId, log: RaftLog, current_term: int) -> None:
        """Check and record the entries ``node`` (now in ``current_term``) newly commits.

        Called after every event, so the leader that commits an entry observes it
        first and ``commit_term`` is the term the entry was committed in.
        """
        lo = max(log.snapshot_index, self._checked_commit.get(node, 0)) + 1
        for index in range(lo, log.committed + 1):
            term = log.term(index)
            if term is None:
                continue
            known = self.committed.setdefault(index, term)
            self.commit_term.setdefault(index, current_term)
            if known != term:
                self._fail(
                    f"committed entry replaced: node {node} commits term {term} at index "
                    f"{index}, but term {known} was committed there"
                )
                return
        self._checked_commit[node] = log.committed
        self.max_committed = max(self.max_committed, log.committed)

    def on_state_machine_reset(self, node: NodeId, applied: int) -> None:
        """``node`` restarted or installed a snapshot: its state machine is at ``applied``."""
        self._last_applied[node] = applied
        self._checked_commit[node] = applied

    def on_apply(self, node: NodeId, entry: Entry) -> None:
        """``node`` applied ``entry`` to its state machine."""
        last = self._last_applied.get(node, 0)
        if entry.index != last + 1:
            self._fail(f"apply order: node {node} applied index {entry.index} after {last}")
        self._last_applied[node] = entry.index
        mine = (entry.term, entry.data)
        seen = self._applied.setdefault(entry.index, mine)
        if seen != mine:
            self._fail(
                f"state machine safety: node {node} applied term {entry.term} at index "
                f"{entry.index}, another node applied term {seen[0]} there"
            )
